//! Keyed timers: the operator registers a timer for the current key, in
//! event time or processing time; when it fires the host calls
//! [`Operator::on_timer`](crate::Operator::on_timer) with that key as the
//! current key, so keyed state reads and writes that key's state.
//!
//! Registrations and deletions are buffered and sent to the host in one
//! call at the end of the batch; fired timers arrive in batches too. The
//! host keeps timers in checkpoints and savepoints, moves them with their
//! keys when parallelism changes, and deduplicates them by (key, time,
//! domain, tag).

use crate::{Error, host, runtime};

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires once the watermark reaches its time (at the latest at the end
    /// of bounded input).
    EventTime,
    /// Fires once the job's clock (Unix milliseconds) reaches its time.
    ProcessingTime,
}

/// A fired timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The key it was registered for (the current key in `on_timer`).
    pub key: Vec<u8>,
    /// Its time, in milliseconds.
    pub time: i64,
    /// Its clock.
    pub domain: TimeDomain,
    /// The tag it was registered with.
    pub tag: u32,
}

/// A buffered registration (`true`) or deletion.
pub(crate) type TimerOp = (bool, Timer);

/// The subtask's timers. Create the handle in
/// [`Operator::open`](crate::Operator::open), like state handles; use it in
/// `process` and `on_timer`, where there is a current key.
#[derive(Debug)]
pub struct Timers {
    _private: (),
}

impl Default for Timers {
    fn default() -> Timers {
        Timers::new()
    }
}

impl Timers {
    /// A handle on the subtask's timers.
    pub fn new() -> Timers {
        runtime::declare_state();
        Timers { _private: () }
    }

    fn op(&self, register: bool, time: i64, domain: TimeDomain, tag: u32) -> Result<(), Error> {
        let key = runtime::current_key("timers")?;
        runtime::push_timer_op((
            register,
            Timer {
                key,
                time,
                domain,
                tag,
            },
        ));
        Ok(())
    }

    /// Registers an event-time timer for the current key at `time` (ms)
    /// with `tag` (a number the operator chooses, to tell its timers
    /// apart). Registering the same timer again changes nothing.
    pub fn register_event_time(&self, time: i64, tag: u32) -> Result<(), Error> {
        self.op(true, time, TimeDomain::EventTime, tag)
    }

    /// Registers a processing-time timer for the current key at `time`
    /// (Unix ms).
    pub fn register_processing_time(&self, time: i64, tag: u32) -> Result<(), Error> {
        self.op(true, time, TimeDomain::ProcessingTime, tag)
    }

    /// Deletes an event-time timer of the current key, if registered.
    pub fn delete_event_time(&self, time: i64, tag: u32) -> Result<(), Error> {
        self.op(false, time, TimeDomain::EventTime, tag)
    }

    /// Deletes a processing-time timer of the current key, if registered.
    pub fn delete_processing_time(&self, time: i64, tag: u32) -> Result<(), Error> {
        self.op(false, time, TimeDomain::ProcessingTime, tag)
    }

    /// The subtask's event-time watermark (ms): events still to come have
    /// later timestamps, or are late. `None` before the first watermark.
    pub fn current_watermark(&self) -> Option<i64> {
        runtime::current_watermark()
    }

    /// The job's clock, in milliseconds since the Unix epoch.
    pub fn processing_time(&self) -> i64 {
        host::processing_time()
    }
}
