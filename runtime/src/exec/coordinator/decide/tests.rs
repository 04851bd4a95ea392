use super::*;

fn settings() -> Settings {
    Settings {
        interval: at(100),
        timeout: at(1000),
        min_pause: at(50),
        tolerable_failures: 2,
        periodic: true,
        tasks: 3,
        job: "j".into(),
    }
}

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Acknowledges checkpoint `id` from every task; returns the last answer.
fn ack_all(d: &mut Decider, id: u64, now: Duration) -> Vec<Action> {
    let mut last = Vec::new();
    for _ in 0..3 {
        last = d.on(Event::Ack { id }, now);
    }
    last
}

fn written(d: &mut Decider, id: u64, now: Duration) -> Vec<Action> {
    d.on(
        Event::Written {
            id,
            outcome: Ok(()),
        },
        now,
    )
}

fn trigger(id: u64, full: bool) -> Action {
    Action::Trigger {
        id,
        full,
        stop: None,
        end: false,
        request: None,
    }
}

#[test]
fn checkpoints_on_the_interval_the_first_full_then_incremental() {
    let mut d = Decider::new(settings(), 7, at(0));
    assert!(d.on(Event::Tick, at(99)).is_empty(), "not yet");
    assert_eq!(d.deadline(), at(100));
    assert_eq!(d.on(Event::Tick, at(100)), vec![trigger(7, true)]);
    assert_eq!(d.pending(), Some(7));
    assert!(d.on(Event::Ack { id: 7 }, at(110)).is_empty());
    assert!(
        d.on(Event::Ack { id: 6 }, at(110)).is_empty(),
        "a stale ack"
    );
    assert!(d.on(Event::Ack { id: 7 }, at(110)).is_empty());
    assert_eq!(
        d.on(Event::Ack { id: 7 }, at(120)),
        vec![Action::Write {
            id: 7,
            savepoint: false
        }]
    );
    assert_eq!(
        written(&mut d, 7, at(130)),
        vec![Action::Commit { id: 7 }, Action::Retain]
    );
    assert_eq!(d.pending(), None);
    assert!(d.on(Event::Tick, at(150)).is_empty());
    assert_eq!(
        d.on(Event::Tick, at(200)),
        vec![trigger(8, false)],
        "after a completed one: incremental"
    );
}

#[test]
fn the_min_pause_holds_the_next_trigger_back() {
    let mut d = Decider::new(settings(), 1, at(0));
    d.on(Event::Tick, at(100));
    ack_all(&mut d, 1, at(195));
    written(&mut d, 1, at(195));
    assert!(
        d.on(Event::Tick, at(200)).is_empty(),
        "50 ms pause after 195"
    );
    assert_eq!(d.on(Event::Tick, at(245)), vec![trigger(2, false)]);
}

#[test]
fn failures_are_tolerated_then_fail_the_job_and_force_a_full_checkpoint() {
    let mut d = Decider::new(settings(), 1, at(0));
    let mut now = 0;
    for n in 1..=3u64 {
        now += 100;
        let t = d.on(Event::Tick, at(now));
        assert_eq!(
            t,
            vec![trigger(n, true)],
            "never incremental after a failure"
        );
        ack_all(&mut d, n, at(now));
        let out = d.on(
            Event::Written {
                id: n,
                outcome: Err("disk full".into()),
            },
            at(now),
        );
        assert!(out.iter().any(|a| matches!(a, Action::CountFailure { .. })));
        if n <= 2 {
            assert!(
                matches!(&out[0], Action::Warn(w) if w.contains(&format!("{n} of 2 tolerated"))),
                "{out:?}"
            );
        } else {
            assert!(
                matches!(&out[0], Action::Fail(f) if f.contains("3 checkpoints failed in a row")),
                "{out:?}"
            );
        }
    }
}

#[test]
fn a_checkpoint_that_times_out_is_discarded_and_counted() {
    let mut d = Decider::new(settings(), 1, at(0));
    d.on(Event::Tick, at(100));
    assert_eq!(d.deadline(), at(1100));
    assert!(d.on(Event::Tick, at(1099)).is_empty());
    let out = d.on(Event::Tick, at(1100));
    assert_eq!(out[0], Action::Discard { id: 1 });
    assert!(matches!(&out[1], Action::Warn(w) if w.contains("timed out after 1000 ms")));
    assert!(
        matches!(&out[2], Action::CountFailure { id: 1, why } if why.contains("checkpoint 1 timed out"))
    );
    assert_eq!(d.pending(), None);
    assert!(d.on(Event::Ack { id: 1 }, at(1101)).is_empty(), "too late");
}

#[test]
fn requests_queue_behind_the_checkpoint_in_flight_and_are_answered() {
    let mut d = Decider::new(settings(), 1, at(0));
    d.on(Event::Tick, at(100));
    let sp = Req {
        id: 9,
        savepoint: true,
        stop: Some(StopMode::Suspend),
    };
    assert!(d.on(Event::Request(sp), at(101)).is_empty());
    assert!(d.poll(at(101)).is_empty(), "checkpoint 1 is in flight");
    ack_all(&mut d, 1, at(102));
    written(&mut d, 1, at(102));
    assert_eq!(
        d.poll(at(103)),
        vec![Action::Trigger {
            id: 2,
            full: false,
            stop: Some(StopMode::Suspend),
            end: false,
            request: Some(9)
        }]
    );
    assert_eq!(
        ack_all(&mut d, 2, at(104)),
        vec![Action::Write {
            id: 2,
            savepoint: true
        }]
    );
    assert_eq!(
        written(&mut d, 2, at(105)),
        vec![Action::Register { id: 2, req: 9 }]
    );
    assert!(
        d.on(Event::Tick, at(5000)).is_empty(),
        "no timeout while it registers"
    );
    assert_eq!(
        d.on(
            Event::Registered {
                id: 2,
                outcome: Ok(())
            },
            at(106)
        ),
        vec![
            Action::Commit { id: 2 },
            Action::Reply {
                req: 9,
                outcome: Ok(2)
            },
            Action::Retain
        ]
    );
    assert!(d.stopped());
    let late = d.on(
        Event::Request(Req {
            id: 10,
            savepoint: false,
            stop: None,
        }),
        at(107),
    );
    assert!(
        matches!(&late[0], Action::Reply { req: 10, outcome: Err(e) } if e.contains("is finishing")),
        "{late:?}"
    );
    assert!(d.on(Event::Tick, at(9000)).is_empty(), "stopped: no more");
}

#[test]
fn a_savepoint_that_cannot_be_registered_is_not_committed_and_a_stop_fails_the_job() {
    let mut d = Decider::new(settings(), 1, at(0));
    d.on(
        Event::Request(Req {
            id: 1,
            savepoint: true,
            stop: Some(StopMode::Drain),
        }),
        at(0),
    );
    d.poll(at(0));
    ack_all(&mut d, 1, at(1));
    written(&mut d, 1, at(1));
    let out = d.on(
        Event::Registered {
            id: 1,
            outcome: Err("name taken".into()),
        },
        at(2),
    );
    assert!(!out.iter().any(|a| matches!(a, Action::Commit { .. })));
    assert!(out.iter().any(|a| matches!(a, Action::CountFailure { .. })));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Fail(f) if f.contains("stop with savepoint failed")))
    );
    assert!(out.iter().any(|a| matches!(a, Action::Reply { req: 1, outcome: Err(e) } if e.contains("could not be registered: name taken"))));
}

#[test]
fn the_end_of_the_input_takes_the_final_checkpoint_and_refuses_requests() {
    let mut d = Decider::new(settings(), 1, at(0));
    d.on(
        Event::Request(Req {
            id: 4,
            savepoint: true,
            stop: None,
        }),
        at(0),
    );
    let out = d.on(Event::InputEnded, at(1));
    assert!(
        matches!(&out[0], Action::Reply { req: 4, outcome: Err(e) } if e.contains("final checkpoint")),
        "{out:?}"
    );
    assert_eq!(
        d.poll(at(1)),
        vec![Action::Trigger {
            id: 1,
            full: true,
            stop: None,
            end: true,
            request: None
        }]
    );
    assert!(d.poll(at(2)).is_empty(), "once");
    assert!(d.on(Event::Tick, at(500)).is_empty(), "no periodic one now");
    ack_all(&mut d, 1, at(3));
    let out = d.on(
        Event::Written {
            id: 1,
            outcome: Err("gone".into()),
        },
        at(4),
    );
    assert!(
        matches!(&out[0], Action::Fail(f) if f.contains("the final checkpoint failed")),
        "a failed final checkpoint fails the job whatever the tolerance: {out:?}"
    );
}

#[test]
fn without_periodic_checkpoints_only_requests_trigger_and_finishing_abandons() {
    let mut d = Decider::new(
        Settings {
            periodic: false,
            ..settings()
        },
        1,
        at(0),
    );
    assert!(d.on(Event::Tick, at(1_000_000)).is_empty());
    d.on(
        Event::Request(Req {
            id: 1,
            savepoint: false,
            stop: None,
        }),
        at(0),
    );
    d.on(
        Event::Request(Req {
            id: 2,
            savepoint: false,
            stop: None,
        }),
        at(0),
    );
    assert_eq!(
        d.poll(at(0)),
        vec![Action::Trigger {
            id: 1,
            full: true,
            stop: None,
            end: false,
            request: Some(1)
        }]
    );
    let out = d.on(Event::Finished, at(1));
    assert_eq!(out[0], Action::Discard { id: 1 });
    assert!(
        matches!(&out[1], Action::CountFailure { id: 1, why } if why.contains("finished without it"))
    );
    assert!(
        matches!(&out[2], Action::Reply { req: 1, outcome: Err(e) } if e.contains("finished without it"))
    );
    assert!(
        matches!(&out[3], Action::Reply { req: 2, outcome: Err(e) } if e.contains("is finishing"))
    );
    assert!(d.poll(at(2)).is_empty());
}
