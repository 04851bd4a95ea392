//! The checkpoint coordinator's decisions, as a plain state machine: events
//! in (acknowledgements, clock ticks, requests, the end of the input, the
//! outcome of a write), actions out (trigger a barrier, write the
//! checkpoint, register a savepoint, commit the sinks, reply, fail the
//! job). No I/O, no channels, no wall clock: time is an argument, so the
//! tests drive it by hand. The shell (`super`) performs the actions and
//! feeds their outcomes back.

use super::super::StopMode;
use std::collections::VecDeque;
use std::time::Duration;

/// A request's handle: the shell keeps the request (its reply channel)
/// under it.
pub(crate) type ReqId = u64;

/// A request from outside the job, as the decisions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Req {
    pub id: ReqId,
    /// A savepoint (registered once the checkpoint is written).
    pub savepoint: bool,
    /// Stop the job at it.
    pub stop: Option<StopMode>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Time passed (a wait ended); `now` comes with every call.
    Tick,
    /// A subtask acknowledged checkpoint `id`.
    Ack { id: u64 },
    /// Without periodic checkpoints: a subtask reached the end of its
    /// input, so no checkpoint can complete any more.
    Finished,
    /// Every source has reached the end of its input: the final
    /// checkpoint is due.
    InputEnded,
    /// A request to take a checkpoint or savepoint (and maybe stop).
    Request(Req),
    /// The checkpoint's state and manifest were written (`Ok`), or not.
    Written {
        id: u64,
        outcome: Result<(), String>,
    },
    /// The savepoint of checkpoint `id` was registered (`Ok`), or not.
    Registered {
        id: u64,
        outcome: Result<(), String>,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send barrier `id` to every source.
    Trigger {
        id: u64,
        full: bool,
        stop: Option<StopMode>,
        end: bool,
        /// The request it answers, if any.
        request: Option<ReqId>,
    },
    /// Every subtask has acknowledged `id`: write its state and manifest,
    /// then report [`Event::Written`].
    Write { id: u64, savepoint: bool },
    /// Register checkpoint `id` as the savepoint request `req` asked for,
    /// then report [`Event::Registered`].
    Register { id: u64, req: ReqId },
    /// Tell the sinks checkpoint `id` is complete.
    Commit { id: u64 },
    /// Checkpoint `id` is complete: retention and garbage collection.
    Retain,
    /// Drop what the subtasks sent for checkpoint `id` (it will not be
    /// written).
    Discard { id: u64 },
    /// Answer a request: the checkpoint it produced, or why not.
    Reply {
        req: ReqId,
        outcome: Result<u64, String>,
    },
    /// Checkpoint `id` failed or was given up, for `why`: counted in the
    /// metrics and listed in the job's status.
    CountFailure {
        /// The checkpoint.
        id: u64,
        /// Why, in the user's words.
        why: String,
    },
    /// A tolerated checkpoint failure, to log.
    Warn(String),
    /// Fail the job (it restarts under its policy).
    Fail(String),
}

/// The coordinator's settings that decisions depend on.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub interval: Duration,
    pub timeout: Duration,
    pub min_pause: Duration,
    pub tolerable_failures: u32,
    /// Checkpoints on the interval; otherwise only on request.
    pub periodic: bool,
    /// Subtasks that acknowledge each checkpoint.
    pub tasks: usize,
    /// The job's name, for messages.
    pub job: String,
}

#[derive(Debug)]
struct InFlight {
    id: u64,
    triggered: Duration,
    acks: usize,
    request: Option<Req>,
    end: bool,
    /// Written, waiting for the savepoint's registration.
    registering: bool,
}

/// The decisions' state.
#[derive(Debug)]
pub(crate) struct Decider {
    s: Settings,
    next_id: u64,
    /// Whether the last triggered checkpoint completed: only then may the
    /// next one be incremental.
    last_completed: bool,
    failures: u32,
    next_trigger: Duration,
    pending: Option<InFlight>,
    queued: VecDeque<Req>,
    finished: bool,
    input_ended: bool,
    final_triggered: bool,
    stopped: bool,
}

impl Decider {
    /// Decisions numbering checkpoints from `next_id`, the clock at `now`.
    pub(crate) fn new(s: Settings, next_id: u64, now: Duration) -> Decider {
        let next_trigger = now.saturating_add(s.period());
        Decider {
            s,
            next_id,
            last_completed: false,
            failures: 0,
            next_trigger,
            pending: None,
            queued: VecDeque::new(),
            finished: false,
            input_ended: false,
            final_triggered: false,
            stopped: false,
        }
    }

    /// The checkpoint in flight.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.id)
    }

    /// When to look again without an event: the in-flight checkpoint's
    /// timeout, or the next periodic trigger.
    pub(crate) fn deadline(&self) -> Duration {
        match &self.pending {
            Some(p) => p.triggered.saturating_add(self.s.timeout),
            None => self.next_trigger,
        }
    }

    /// Whether the job stopped at a savepoint.
    #[cfg(test)]
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// What to do now, before waiting: start a queued request's
    /// checkpoint, or the final one.
    pub(crate) fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if self.pending.is_none()
            && !self.stopped
            && !self.finished
            && !self.input_ended
            && let Some(r) = self.queued.pop_front()
        {
            out.push(self.trigger(Some(r), false, now));
        }
        if self.pending.is_none() && !self.stopped && self.input_ended && !self.final_triggered {
            self.final_triggered = true;
            out.push(self.trigger(None, true, now));
        }
        out
    }

    /// Takes in one event at `now`.
    pub(crate) fn on(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Ack { id } => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.id == id) {
                    p.acks += 1;
                    if p.acks == self.s.tasks {
                        let savepoint = p.request.is_some_and(|r| r.savepoint);
                        out.push(Action::Write { id, savepoint });
                    }
                }
            }
            Event::Written { id, outcome } => self.written(id, outcome, now, &mut out),
            Event::Registered { id, outcome } => self.registered(id, outcome, now, &mut out),
            Event::Finished => {
                if !self.finished {
                    self.finished = true;
                    if let Some(p) = self.pending.take() {
                        out.push(Action::Discard { id: p.id });
                        self.abandon(
                            p.id,
                            p.request,
                            "the job's input ended before every subtask took part; the job finished without it".into(),
                            &mut out,
                        );
                    }
                    let why = format!(
                        "job '{}' reached the end of its input and is finishing; no more checkpoints can complete",
                        self.s.job
                    );
                    for r in self.queued.drain(..) {
                        out.push(Action::Reply {
                            req: r.id,
                            outcome: Err(why.clone()),
                        });
                    }
                }
            }
            Event::InputEnded => {
                self.input_ended = true;
                for r in std::mem::take(&mut self.queued) {
                    out.push(Action::Reply {
                        req: r.id,
                        outcome: Err(self.taking_final()),
                    });
                }
            }
            Event::Request(r) => {
                let refused = if self.input_ended {
                    Some(self.taking_final())
                } else if self.finished || self.stopped {
                    Some(format!(
                        "job '{}' is finishing; no more checkpoints can complete",
                        self.s.job
                    ))
                } else {
                    None
                };
                match refused {
                    Some(why) => out.push(Action::Reply {
                        req: r.id,
                        outcome: Err(why),
                    }),
                    None => self.queued.push_back(r),
                }
            }
            Event::Tick => {
                if let Some(p) = self.pending.take_if(|p| {
                    !p.registering && now.saturating_sub(p.triggered) >= self.s.timeout
                }) {
                    let msg = format!(
                        "checkpoint {} timed out after {} ms (checkpoint.timeout-ms)",
                        p.id,
                        self.s.timeout.as_millis()
                    );
                    out.push(Action::Discard { id: p.id });
                    self.failed(&msg, p.end, &mut out);
                    self.abandon(p.id, p.request, msg, &mut out);
                    self.next_trigger = now.saturating_add(self.s.min_pause);
                }
                if self.pending.is_none()
                    && !self.finished
                    && !self.input_ended
                    && !self.stopped
                    && now >= self.next_trigger
                {
                    out.push(self.trigger(None, false, now));
                    self.next_trigger = now.saturating_add(self.s.period());
                }
            }
        }
        out
    }

    fn trigger(&mut self, request: Option<Req>, end: bool, now: Duration) -> Action {
        let id = self.next_id;
        self.next_id += 1;
        let full = !self.last_completed;
        self.last_completed = false;
        self.pending = Some(InFlight {
            id,
            triggered: now,
            acks: 0,
            request,
            end,
            registering: false,
        });
        Action::Trigger {
            id,
            full,
            stop: request.and_then(|r| r.stop),
            end,
            request: request.map(|r| r.id),
        }
    }

    fn written(
        &mut self,
        id: u64,
        outcome: Result<(), String>,
        now: Duration,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.pending.take_if(|p| p.id == id) else {
            return;
        };
        self.next_trigger = now.saturating_add(self.s.min_pause).max(self.next_trigger);
        if let Err(e) = outcome {
            let msg = format!("checkpoint {id} failed: {e}");
            self.failed(&msg, p.end, out);
            self.abandon(p.id, p.request, msg, out);
            return;
        }
        self.failures = 0;
        self.last_completed = true;
        if let Some(r) = p.request.filter(|r| r.savepoint) {
            // Registered before the sinks commit: a stop must not commit
            // output past a savepoint that does not exist.
            out.push(Action::Register { id, req: r.id });
            self.pending = Some(InFlight {
                registering: true,
                ..p
            });
        } else {
            self.completed(p, out);
        }
    }

    fn registered(
        &mut self,
        id: u64,
        outcome: Result<(), String>,
        _now: Duration,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.pending.take_if(|p| p.id == id && p.registering) else {
            return;
        };
        match outcome {
            Ok(()) => self.completed(p, out),
            Err(e) => self.abandon(
                p.id,
                p.request,
                format!(
                    "checkpoint {id} completed, but the savepoint could not be registered: {e}"
                ),
                out,
            ),
        }
    }

    /// Checkpoint `p` is durable (and registered): the sinks commit, the
    /// requester gets its answer, then housekeeping.
    fn completed(&mut self, p: InFlight, out: &mut Vec<Action>) {
        out.push(Action::Commit { id: p.id });
        if let Some(r) = p.request {
            out.push(Action::Reply {
                req: r.id,
                outcome: Ok(p.id),
            });
            if r.stop.is_some() {
                self.stopped = true;
            }
        }
        out.push(Action::Retain);
    }

    fn taking_final(&self) -> String {
        format!(
            "job '{}' reached the end of its input and is taking its final checkpoint; no savepoint can be taken now",
            self.s.job
        )
    }

    /// A checkpoint failed (storage, timeout). The final one fails the job
    /// at once (every subtask has passed its barrier); another fails it
    /// once more than `tolerable-failures` fail in a row.
    fn failed(&mut self, msg: &str, end: bool, out: &mut Vec<Action>) {
        self.failures += 1;
        if end {
            out.push(Action::Fail(format!(
                "the final checkpoint failed ({msg}); nothing after the last completed checkpoint was made visible"
            )));
        } else if self.failures > self.s.tolerable_failures {
            out.push(Action::Fail(format!(
                "{} checkpoints failed in a row (more than checkpoint.tolerable-failures = {}); the last: {msg}",
                self.failures, self.s.tolerable_failures
            )));
        } else {
            out.push(Action::Warn(format!(
                "{msg}; the job goes on ({} of {} tolerated failures in a row)",
                self.failures, self.s.tolerable_failures
            )));
        }
    }

    /// A checkpoint that will not complete: counted; whoever asked is
    /// told; a stop that cannot complete fails the job (its sources have
    /// stopped).
    fn abandon(&mut self, id: u64, request: Option<Req>, why: String, out: &mut Vec<Action>) {
        out.push(Action::CountFailure {
            id,
            why: why.clone(),
        });
        if let Some(r) = request {
            if r.stop.is_some() {
                out.push(Action::Fail(format!(
                    "stop with savepoint failed: {why}; the job stopped without a savepoint"
                )));
            }
            out.push(Action::Reply {
                req: r.id,
                outcome: Err(why),
            });
        }
    }
}

impl Settings {
    fn period(&self) -> Duration {
        if self.periodic {
            self.interval
        } else {
            Duration::from_secs(365 * 24 * 3600)
        }
    }
}

#[cfg(test)]
mod tests;
