//! Watermarks: how far event time has progressed. A source makes them per
//! split (bounded out-of-orderness, idleness), they travel in-band on the
//! channels like barriers, and a subtask's watermark is the minimum over
//! its inputs that are neither idle nor ended (Flink's model; docs/time.md).

use crate::batch::Batch;
use crate::connect::SplitTime;
use crate::job::WatermarkStrategy;
use std::collections::HashMap;
use std::time::Duration;

/// What travels on a channel about event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// No event with a timestamp at or before this (ms) is expected any
    /// more on this channel.
    At(i64),
    /// The channel is idle: it holds no watermark back until it sends
    /// again.
    Idle,
}

/// The watermark of the end of input: every event time has passed.
pub const END_OF_TIME: i64 = i64::MAX;

/// A source subtask's watermarks: per split, the highest event time read
/// minus the out-of-orderness bound; the subtask's is the minimum over its
/// splits that are neither idle nor ended.
pub(super) struct SourceWatermarks {
    strategy: WatermarkStrategy,
    /// The reader's events, when it is one split (it has no
    /// [`crate::connect::SourceReader::split_times`]).
    own: SplitTime,
    /// Per split: its event count when last looked at, and since when (on
    /// the job's clock) it has stood still. A split is idle once it has
    /// stood still for `idle-timeout-ms`.
    still: HashMap<String, (u64, Duration)>,
    /// The last watermark sent (never less is sent after it).
    sent: Option<i64>,
    /// Whether the last thing sent was [`Watermark::Idle`].
    idle: bool,
    /// When the next watermark is due.
    next: Duration,
    /// Events read since the last watermark (`interval-ms = 0`: a
    /// watermark follows every batch that read any).
    fresh: bool,
}

impl SourceWatermarks {
    pub(super) fn new(strategy: WatermarkStrategy, name: &str) -> SourceWatermarks {
        SourceWatermarks {
            strategy,
            own: SplitTime::new(name),
            still: HashMap::new(),
            sent: None,
            idle: false,
            next: Duration::ZERO,
            fresh: false,
        }
    }

    /// Follows the event times of `batch[from..]`, for a reader that is
    /// one split.
    pub(super) fn observe(&mut self, batch: &Batch, from: usize) {
        self.fresh |= from < batch.len();
        for i in from..batch.len() {
            self.own.saw(batch.get(i).timestamp);
        }
    }

    /// When the next watermark is due (on the job's clock). With
    /// `interval-ms = 0`, at once after a batch that read events, and never
    /// while none come.
    pub(super) fn due(&self) -> Duration {
        match (self.strategy.interval_ms, self.fresh) {
            (0, true) => Duration::ZERO,
            (0, false) => Duration::MAX,
            _ => self.next,
        }
    }

    /// The split's own watermark: its highest event time less the bound
    /// and 1 ms (events at the bound are still on time).
    fn of(&self, s: &SplitTime) -> Option<i64> {
        let ooo = i64::try_from(self.strategy.out_of_orderness_ms).unwrap_or(i64::MAX);
        s.max_event_time
            .map(|t| t.saturating_sub(ooo).saturating_sub(1))
    }

    /// Whether split `s` is idle at `now`: no new event for the idle
    /// timeout.
    fn is_idle(&mut self, s: &SplitTime, now: Duration) -> bool {
        let since = match self.still.get_mut(&s.split) {
            Some((events, since)) if *events == s.events => *since,
            Some(e) => {
                *e = (s.events, now);
                now
            }
            None => {
                self.still.insert(s.split.clone(), (s.events, now));
                now
            }
        };
        self.strategy
            .idle_timeout_ms
            .is_some_and(|t| now.saturating_sub(since) >= Duration::from_millis(t))
    }

    /// At `now` (when [`SourceWatermarks::due`]): what to send, if
    /// anything, given the reader's splits (`None`: the reader is one
    /// split). Also returns every split's own watermark, for the metrics.
    pub(super) fn next(
        &mut self,
        splits: Option<Vec<SplitTime>>,
        now: Duration,
    ) -> (Option<Watermark>, Vec<(String, Option<i64>)>) {
        self.next = now.saturating_add(Duration::from_millis(self.strategy.interval_ms));
        self.fresh = false;
        let splits = splits.unwrap_or_else(|| vec![self.own.clone()]);
        let per_split = splits
            .iter()
            .map(|s| (s.split.clone(), self.of(s)))
            .collect();
        let mut active: Vec<&SplitTime> = Vec::new();
        for s in &splits {
            if !self.is_idle(s, now) && !s.ended {
                active.push(s);
            }
        }
        if active.is_empty() {
            // Every split idle (or none assigned): hold nothing back.
            // Ended splits alone: the end of input sends its own watermark.
            if !self.idle && (splits.is_empty() || splits.iter().any(|s| !s.ended)) {
                self.idle = true;
                return (Some(Watermark::Idle), per_split);
            }
            return (None, per_split);
        }
        // A split with no event yet holds the watermark back, unless idle.
        let Some(wm) = active
            .iter()
            .map(|s| self.of(s))
            .collect::<Option<Vec<i64>>>()
            .and_then(|w| w.into_iter().min())
        else {
            return (None, per_split);
        };
        let was_idle = std::mem::replace(&mut self.idle, false);
        match self.sent {
            Some(sent) if wm <= sent && !was_idle => (None, per_split),
            sent => {
                let wm = sent.map_or(wm, |s| s.max(wm));
                self.sent = Some(wm);
                (Some(Watermark::At(wm)), per_split)
            }
        }
    }
}

/// A subtask's watermark from its input channels: the minimum over the
/// channels that are neither idle nor ended. A channel that comes back
/// from idleness behind the subtask's watermark counts again once it has
/// caught up (until then its events are late), as Flink's valve does.
#[derive(Debug)]
pub(super) struct InputWatermarks {
    at: Vec<Option<i64>>,
    idle: Vec<bool>,
    /// Whether the channel's watermark is at or past the subtask's.
    aligned: Vec<bool>,
    /// The subtask's watermark, as last passed on.
    current: Option<i64>,
    /// Whether the subtask last passed on [`Watermark::Idle`].
    idle_out: bool,
}

impl InputWatermarks {
    pub(super) fn new(channels: usize) -> InputWatermarks {
        InputWatermarks {
            at: vec![None; channels],
            idle: vec![false; channels],
            aligned: vec![true; channels],
            current: None,
            idle_out: false,
        }
    }

    /// The subtask's watermark, as last passed on.
    #[cfg(test)]
    pub(super) fn current(&self) -> Option<i64> {
        self.current
    }

    /// Channel `c` sent `w`; `ended` says which channels have ended.
    /// Returns what the subtask passes on, if anything changed.
    pub(super) fn on(&mut self, c: usize, w: Watermark, ended: &[bool]) -> Option<Watermark> {
        match w {
            Watermark::Idle => self.idle[c] = true,
            Watermark::At(t) => {
                self.idle[c] = false;
                let t = self.at[c].map_or(t, |old| old.max(t));
                self.at[c] = Some(t);
                self.aligned[c] = self.current.is_none_or(|cur| t >= cur);
            }
        }
        self.combined(ended)
    }

    /// What the subtask passes on after channel ends change `ended`.
    pub(super) fn on_end(&mut self, ended: &[bool]) -> Option<Watermark> {
        self.combined(ended)
    }

    fn combined(&mut self, ended: &[bool]) -> Option<Watermark> {
        let live: Vec<usize> = (0..self.at.len()).filter(|&c| !ended[c]).collect();
        if live.is_empty() {
            return None; // The end of every input says the rest.
        }
        let active: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&c| !self.idle[c] && self.aligned[c])
            .collect();
        if active.is_empty() {
            if live.iter().all(|&c| self.idle[c]) && !self.idle_out {
                self.idle_out = true;
                return Some(Watermark::Idle);
            }
            return None;
        }
        // A channel that has sent no watermark yet holds the subtask back.
        let min = active
            .iter()
            .map(|&c| self.at[c])
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .min()?;
        let was_idle = std::mem::replace(&mut self.idle_out, false);
        if self.current.is_some_and(|cur| min <= cur) && !was_idle {
            return None;
        }
        let next = self.current.map_or(min, |cur| cur.max(min));
        self.current = Some(next);
        for c in 0..self.at.len() {
            self.aligned[c] = self.aligned[c] || self.at[c].is_some_and(|t| t >= next);
        }
        Some(Watermark::At(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(ooo: u64, idle: Option<u64>) -> WatermarkStrategy {
        WatermarkStrategy {
            out_of_orderness_ms: ooo,
            idle_timeout_ms: idle,
            interval_ms: 200,
        }
    }

    /// A split with `events` events read so far, the highest at `max`.
    fn split(name: &str, max: Option<i64>, events: u64) -> SplitTime {
        SplitTime {
            split: name.into(),
            max_event_time: max,
            events,
            ended: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_source_watermark_is_the_slowest_active_split_less_the_bound() {
        let mut w = SourceWatermarks::new(strategy(200, Some(1000)), "s");
        let (out, per) = w.next(
            Some(vec![split("p0", Some(5000), 1), split("p1", Some(3000), 1)]),
            ms(100),
        );
        assert_eq!(out, Some(Watermark::At(2799)));
        assert_eq!(
            per,
            vec![("p0".into(), Some(4799)), ("p1".into(), Some(2799))]
        );
        // Nothing new: nothing sent.
        let (out, _) = w.next(
            Some(vec![split("p0", Some(5000), 1), split("p1", Some(3000), 1)]),
            ms(300),
        );
        assert_eq!(out, None);
        // p1 stands still for the idle timeout: p0 alone decides.
        let (out, _) = w.next(
            Some(vec![split("p0", Some(9000), 2), split("p1", Some(3000), 1)]),
            ms(1100),
        );
        assert_eq!(out, Some(Watermark::At(8799)));
        // p1 comes back behind: the watermark never goes back.
        let (out, _) = w.next(
            Some(vec![split("p0", Some(9000), 2), split("p1", Some(4000), 2)]),
            ms(1200),
        );
        assert_eq!(out, None);
    }

    #[test]
    fn a_split_without_events_holds_back_until_it_is_idle() {
        let mut w = SourceWatermarks::new(strategy(0, Some(1000)), "s");
        let at = |p0: u64| Some(vec![split("p0", Some(5000), p0), split("p1", None, 0)]);
        assert_eq!(w.next(at(1), ms(0)).0, None);
        assert_eq!(w.next(at(2), ms(999)).0, None);
        assert_eq!(w.next(at(3), ms(1000)).0, Some(Watermark::At(4999)));
        // Both quiet: the source says it is idle, once.
        assert_eq!(w.next(at(3), ms(2000)).0, Some(Watermark::Idle));
        assert_eq!(w.next(at(3), ms(2500)).0, None);
        // And active again with the same watermark: it says so.
        assert_eq!(w.next(at(4), ms(2600)).0, Some(Watermark::At(4999)));
    }

    #[test]
    fn a_reader_that_is_one_split_is_followed_by_its_events() {
        let mut w = SourceWatermarks::new(strategy(10, None), "file");
        let mut b = Batch::default();
        b.push(None, b"a", Some(100));
        b.push(None, b"b", Some(50));
        b.push(None, b"c", None);
        w.observe(&b, 0);
        assert_eq!(w.next(None, ms(0)).0, Some(Watermark::At(89)));
    }

    #[test]
    fn inputs_combine_to_the_minimum_of_active_channels() {
        let mut i = InputWatermarks::new(3);
        let none = [false; 3];
        assert_eq!(
            i.on(0, Watermark::At(10), &none),
            None,
            "1 and 2 have sent nothing"
        );
        assert_eq!(i.on(1, Watermark::At(20), &none), None);
        assert_eq!(i.on(2, Watermark::At(5), &none), Some(Watermark::At(5)));
        assert_eq!(i.on(2, Watermark::At(30), &none), Some(Watermark::At(10)));
        // Channel 0 goes idle: 1 and 2 decide.
        assert_eq!(i.on(0, Watermark::Idle, &none), Some(Watermark::At(20)));
        // 0 comes back behind: it counts again once it catches up.
        assert_eq!(i.on(0, Watermark::At(15), &none), None);
        assert_eq!(i.on(1, Watermark::At(40), &none), Some(Watermark::At(30)));
        // 0 has caught up and counts again; 2 is the slowest.
        assert_eq!(i.on(0, Watermark::At(35), &none), None);
        // An ended channel no longer holds anything back.
        let ended = [false, false, true];
        assert_eq!(i.on_end(&ended), Some(Watermark::At(35)));
        // All idle: the subtask is idle, once.
        assert_eq!(i.on(0, Watermark::Idle, &ended), Some(Watermark::At(40)));
        assert_eq!(i.on(1, Watermark::Idle, &ended), Some(Watermark::Idle));
        assert_eq!(i.on(1, Watermark::Idle, &ended), None);
        assert_eq!(i.current(), Some(40));
    }
}
