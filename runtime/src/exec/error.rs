//! Why a job fails: [`ExecError`], and the one place that decides whether
//! a failure is a consequence of another one and whether a restart can
//! help.

use crate::sandbox::SandboxError;

impl std::fmt::Display for ErrorDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorDomain::User => "user",
            ErrorDomain::External => "external",
            ErrorDomain::Internal => "internal",
        })
    }
}

/// Whose failure an error is: the job's own (its manifest, its operators,
/// the systems as it configured them), a system outside wrun (a broker
/// that is down, storage), or wrun itself (a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorDomain {
    /// The job's configuration or code: fix the job.
    User,
    /// A system the job talks to: it may come back.
    External,
    /// A bug in wrun: please report it.
    Internal,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An operator failed in its sandbox.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A source failed.
    #[error("source '{vertex}': {detail}")]
    Source {
        /// The source.
        vertex: String,
        /// Why.
        detail: String,
        /// The system it reads may come back (a broker that is down, a
        /// lost connection): a restart can help. Otherwise (a missing
        /// stream, bad credentials, bad configuration) it cannot.
        transient: bool,
    },
    /// A sink failed.
    #[error("sink '{vertex}': {detail}")]
    Sink {
        /// The sink.
        vertex: String,
        /// Why.
        detail: String,
        /// As for [`ExecError::Source`].
        transient: bool,
    },
    /// An event could not be routed.
    #[error("edge {edge}: {detail}")]
    Routing {
        /// "from -> to".
        edge: String,
        /// Why.
        detail: String,
    },
    /// A neighbour stopped (a consequence of another failure).
    #[error("a connected subtask stopped")]
    Disconnected,
    /// The job was cancelled.
    #[error("the job was cancelled")]
    Cancelled,
    /// A failure injected by a test (`RunOptions::fail_point`).
    #[error("injected failure in {0}")]
    Injected(String),
    /// The job cannot start from this checkpoint or savepoint, and never
    /// will: it does not fit the job (a uid the job lacks, a changed
    /// max-parallelism, a rescaled source). Not retried.
    #[error("cannot restore from {from}: {detail}")]
    RestoreRefused {
        /// What the job was to start from: "checkpoint 7", or the user's
        /// words for it ([`super::RunOptions::restore_label`]).
        from: String,
        /// Why, and what to change.
        detail: String,
    },
    /// State could not be read back from a checkpoint.
    #[error("cannot restore from checkpoint {id}: {detail}")]
    Restore {
        /// The checkpoint.
        id: u64,
        /// Why.
        detail: String,
    },
    /// The checkpoint coordinator failed the job: a stop with a savepoint
    /// that could not complete, or more checkpoints failed in a row than
    /// `checkpoint.tolerable-failures`.
    #[error("{0}")]
    CheckpointFailure(String),
    /// Another process owns the job now (a fleet's fence refused this
    /// one's checkpoint): it must not go on, here or in a restart.
    #[error("this node no longer owns the job: {0}")]
    Fenced(String),
    /// A runtime thread panicked (a wrun bug).
    #[error("internal error in subtask {0}: {1} (this is a bug in wrun; please report it)")]
    Panicked(String, String),
}

impl ExecError {
    /// Whether this error only follows from another one.
    pub(super) fn is_consequence(&self) -> bool {
        matches!(self, ExecError::Disconnected | ExecError::Cancelled)
    }

    /// Whether running the job again can end differently: the restart
    /// policy applies only to these. A restore refusal is decided by the
    /// job and the checkpoint alone, and a connector's configuration error
    /// (a missing topic or stream, credentials the system refuses, a
    /// refused transaction) by the job and the system: those fail at once.
    /// (A user's cancel is the supervisor's to see: it never restarts
    /// either.)
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::RestoreRefused { .. } | ExecError::Fenced(_) => false,
            ExecError::Source { transient, .. } | ExecError::Sink { transient, .. } => *transient,
            _ => true,
        }
    }

    /// Whose failure this is: what `wrun job status` and the API show
    /// beside the message, so that an operator knows where to look.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            ExecError::Source { transient, .. } | ExecError::Sink { transient, .. } => {
                if *transient {
                    ErrorDomain::External
                } else {
                    ErrorDomain::User
                }
            }
            ExecError::Sandbox(_)
            | ExecError::RestoreRefused { .. }
            | ExecError::Routing { .. } => ErrorDomain::User,
            ExecError::Restore { .. } | ExecError::CheckpointFailure(_) | ExecError::Fenced(_) => {
                ErrorDomain::External
            }
            ExecError::Panicked(..) => ErrorDomain::Internal,
            ExecError::Disconnected | ExecError::Cancelled | ExecError::Injected(_) => {
                ErrorDomain::Internal
            }
        }
    }

    /// Names the restore source in the user's words (`label`) instead of
    /// by its checkpoint ID.
    pub fn with_restore_label(self, label: Option<&str>) -> ExecError {
        match (self, label) {
            (ExecError::RestoreRefused { detail, .. }, Some(l)) => ExecError::RestoreRefused {
                from: l.to_string(),
                detail,
            },
            (e, _) => e,
        }
    }
}
