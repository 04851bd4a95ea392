//! Files and the standard streams: the file and stdin sources (lines or
//! JSON lines) and the file and stdout sinks (JSON lines; the file sink is
//! exactly-once with checkpoints on).

pub mod config;
mod sink;
mod source;

pub use config::{FileSource, StdinSource};

pub use sink::{FileSink, WriterSink, json_line};
pub use source::{FileReader, SourceFormat, StdinReader};
