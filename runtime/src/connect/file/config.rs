//! The `kind = "file"` and `kind = "stdin"` source sections and the
//! `kind = "file"` sink section of `job.toml` (docs/connectors.md, "Files").

use super::SourceFormat;
use crate::connect::config::{FieldError, Fields, Section, field_names, json_pointer};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use toml::Spanned;

/// A file source: one split, the file, read to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileSource {
    /// The file.
    pub path: PathBuf,
    /// Lines or JSON lines.
    pub format: SourceFormat,
    /// The JSON pointer of the key, for JSON lines.
    pub key: Option<String>,
    /// The JSON pointer of the event time, for JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Standard input, read to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StdinSource {
    /// Lines or JSON lines.
    pub format: SourceFormat,
    /// The JSON pointer of the key, for JSON lines.
    pub key: Option<String>,
    /// The JSON pointer of the event time, for JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LinesConfig {
    format: Option<Spanned<SourceFormat>>,
    key: Option<Spanned<String>>,
    timestamp: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PathConfig {
    path: Option<Spanned<String>>,
}

/// A file source from its section.
pub fn file_source(fields: &Fields, s: &Section) -> Result<FileSource, FieldError> {
    s.only(
        fields,
        &[field_names::<PathConfig>(), field_names::<LinesConfig>()],
    )?;
    let path = path(fields, s)?;
    let (format, key, timestamp) = lines(fields, s)?;
    Ok(FileSource {
        path,
        format,
        key,
        timestamp,
    })
}

/// A stdin source from its section.
pub fn stdin_source(fields: &Fields, s: &Section) -> Result<StdinSource, FieldError> {
    s.only(fields, &[field_names::<LinesConfig>()])?;
    let (format, key, timestamp) = lines(fields, s)?;
    Ok(StdinSource {
        format,
        key,
        timestamp,
    })
}

/// A file sink's path from its section.
pub fn file_sink(fields: &Fields, s: &Section) -> Result<PathBuf, FieldError> {
    s.only(fields, &[field_names::<PathConfig>()])?;
    path(fields, s)
}

fn path(fields: &Fields, s: &Section) -> Result<PathBuf, FieldError> {
    let c: PathConfig = s.read(fields)?;
    match c.path {
        Some(p) => Ok(s.resolve(p.get_ref())),
        None => Err(s.needs("`path`")),
    }
}

/// Format, key pointer and timestamp pointer.
type Lines = (SourceFormat, Option<String>, Option<String>);

fn lines(fields: &Fields, s: &Section) -> Result<Lines, FieldError> {
    let c: LinesConfig = s.read(fields)?;
    let format = c
        .format
        .as_ref()
        .map(|f| *f.get_ref())
        .unwrap_or(SourceFormat::Lines);
    let key = match &c.key {
        Some(k) => {
            if format != SourceFormat::Json {
                return Err(s.err(
                    k.span(),
                    "`key` is a JSON pointer and needs `format = \"json\"`",
                ));
            }
            if !k.get_ref().is_empty() && !k.get_ref().starts_with('/') {
                return Err(s.err(k.span(), format!("`key` must be a JSON pointer such as \"/user/id\" (starting with '/'), not {:?}", k.get_ref())));
            }
            Some(k.get_ref().clone())
        }
        None => None,
    };
    let timestamp = match &c.timestamp {
        Some(t) if format != SourceFormat::Json => {
            return Err(s.err(
                t.span(),
                "`timestamp` is a JSON pointer and needs `format = \"json\"`",
            ));
        }
        Some(t) => Some(json_pointer(t, s)?),
        None => None,
    };
    Ok((format, key, timestamp))
}
