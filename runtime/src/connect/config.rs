//! How a connector reads its own section of `job.toml`. Every connector
//! owns its configuration: the fields it takes (a serde struct, kebab-case),
//! their checks and their messages, and builds its source or sink value
//! from them. The manifest parser (`job::manifest`) only finds each
//! `[[source]]` and `[[sink]]` table, takes off the fields every vertex has
//! (`name`, `kind`, `parallelism`) and hands the rest here.
//!
//! Fields keep their place in the manifest ([`toml::Spanned`]), so every
//! error points at the line to fix.

use super::Secret;
use serde::de::{self, DeserializeOwned, Visitor};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::DeTable;

/// A connector's fields, as written (spans are offsets into the manifest).
pub type Fields<'i> = Spanned<DeTable<'i>>;

/// What is wrong with a field: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where in the manifest.
    pub span: Range<usize>,
    /// The message, naming the vertex and the field.
    pub message: String,
    /// The line may hold a secret: never quote it.
    pub hide_line: bool,
}

/// The section being read: which vertex, where it is, and what relative
/// paths in it are relative to.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    /// "source 'lines'" or "sink 'out'".
    pub what: String,
    /// "a kafka source", "a file sink": for "does not apply to" messages.
    pub kind: String,
    /// Where the vertex's `name` is: errors about a missing field point here.
    pub name_span: Range<usize>,
    /// The manifest's directory.
    pub base_dir: &'a Path,
}

impl Section<'_> {
    /// An error at `span`, prefixed with the vertex ("source 'x': ...").
    pub fn err(&self, span: Range<usize>, message: impl std::fmt::Display) -> FieldError {
        FieldError {
            span,
            message: format!("{}: {message}", self.what),
            hide_line: false,
        }
    }

    /// A required field is missing: "source 'x' needs `topics`, ...".
    pub fn needs(&self, what_it_needs: impl std::fmt::Display) -> FieldError {
        FieldError {
            span: self.name_span.clone(),
            message: format!("{} needs {what_it_needs}", self.what),
            hide_line: false,
        }
    }

    /// A path as written, relative to the manifest's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve(self.base_dir, p)
    }

    /// `{ env = "VAR" }` or `{ file = "path" }`: a secret by reference.
    pub fn secret(&self, v: &Spanned<toml::Value>, field: &str) -> Result<Secret, FieldError> {
        let t = v.get_ref().as_table();
        let one = t.filter(|t| t.len() == 1).and_then(|t| t.iter().next());
        match one {
            Some((k, toml::Value::String(s))) if k == "env" && !s.is_empty() => {
                Ok(Secret::Env(s.clone()))
            }
            Some((k, toml::Value::String(s))) if k == "file" && !s.is_empty() => {
                Ok(Secret::File(self.resolve(s)))
            }
            _ => Err(FieldError {
                // The line may hold the secret: never echo it.
                hide_line: true,
                ..self.err(
                    v.span(),
                    format!(
                        "`{field}` names where the secret is, never the secret itself: write `{field} = {{ env = \"VARIABLE\" }}` or `{field} = {{ file = \"path\" }}`"
                    ),
                )
            }),
        }
    }

    /// Refuses every field that is not in one of `accepted` (each a
    /// config struct's [`field_names`]): "`path` does not apply to a kafka
    /// source".
    pub fn only(&self, fields: &Fields, accepted: &[&[&str]]) -> Result<(), FieldError> {
        for (k, _) in fields.get_ref().iter() {
            let key: &str = k.get_ref();
            if !accepted.iter().any(|a| a.contains(&key)) {
                let mut all: Vec<&str> = accepted.iter().flat_map(|a| a.iter().copied()).collect();
                all.sort_unstable();
                let takes = if all.is_empty() {
                    "it takes no other fields".to_string()
                } else {
                    format!(
                        "it takes {}",
                        all.iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let near = all.iter().find(|f| edit_distance(f, key) <= 2);
                let message = match near {
                    Some(f) => format!(
                        "unknown field `{key}` for {}: did you mean `{f}`? ({takes})",
                        self.kind
                    ),
                    None => format!("`{key}` does not apply to {} ({takes})", self.kind),
                };
                return Err(self.err(k.span(), message));
            }
        }
        Ok(())
    }

    /// Reads a config struct out of the section's fields (fields it does
    /// not name are left to [`Section::only`]).
    pub fn read<T: DeserializeOwned>(&self, fields: &Fields) -> Result<T, FieldError> {
        T::deserialize(toml::de::Deserializer::from(fields.clone())).map_err(|e| FieldError {
            span: e.span().unwrap_or_else(|| self.name_span.clone()),
            message: format!("{}: {}", self.what, e.message().trim_end()),
            hide_line: false,
        })
    }
}

/// A JSON pointer such as "/user/id" (empty: the whole value).
pub fn json_pointer(v: &Spanned<String>, s: &Section) -> Result<String, FieldError> {
    let p = v.get_ref();
    if !p.is_empty() && !p.starts_with('/') {
        return Err(s.err(
            v.span(),
            format!("{p:?} is not a JSON pointer: it starts with '/', such as \"/ts\" or \"/event/time\""),
        ));
    }
    Ok(p.clone())
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A sink's `delivery`: "exactly-once" (the default) or "at-least-once".
pub fn delivery(v: &Option<Spanned<String>>, s: &Section) -> Result<super::Delivery, FieldError> {
    use super::Delivery;
    Ok(match v.as_ref().map(|d| (d, d.get_ref().as_str())) {
        None | Some((_, "exactly-once")) => Delivery::ExactlyOnce,
        Some((_, "at-least-once")) => Delivery::AtLeastOnce,
        Some((d, other)) => {
            return Err(s.err(
                d.span(),
                format!("`delivery` is \"exactly-once\" or \"at-least-once\", not {other:?}"),
            ));
        }
    })
}

/// A path relative to `base` unless it is absolute.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `v`, if it is at least `n`: "`keys` must be at least 1, not 0".
pub fn at_least<T>(v: &Spanned<T>, field: &str, n: T) -> Result<T, FieldError>
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    if *v.get_ref() < n {
        return Err(FieldError {
            span: v.span(),
            message: format!("`{field}` must be at least {n}, not {}", v.get_ref()),
            hide_line: false,
        });
    }
    Ok(*v.get_ref())
}

/// An RFC 3339 time ("2026-12-02T10:00:00Z") as milliseconds since the Unix
/// epoch.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The field names (as written in the manifest) of a config struct, as
/// serde sees them: the one list [`Section::only`] checks against, so it
/// cannot drift from the struct.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names = None;
    let _ = T::deserialize(FieldProbe(&mut names));
    names.unwrap_or(&[])
}

/// A deserializer that records the fields a struct asks for and then fails.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.0 = Some(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Two {
        bootstrap_servers: Option<Vec<String>>,
        topic: String,
    }

    #[test]
    fn field_names_are_serdes() {
        assert_eq!(field_names::<Two>(), &["bootstrap-servers", "topic"]);
    }

    fn fields(text: &str) -> Fields<'_> {
        DeTable::parse(text).unwrap()
    }

    fn section() -> Section<'static> {
        Section {
            what: "source 'in'".into(),
            kind: "a kafka source".into(),
            name_span: 0..0,
            base_dir: Path::new("/jobs"),
        }
    }

    #[test]
    fn unknown_fields_name_what_the_kind_takes() {
        let text = "topic = \"t\"\npath = \"x\"\n";
        let f = fields(text);
        let e = section()
            .only(&f, &[field_names::<Two>()])
            .expect_err("path is not a field of Two");
        assert_eq!(&text[e.span], "path");
        assert_eq!(
            e.message,
            "source 'in': `path` does not apply to a kafka source (it takes `bootstrap-servers`, `topic`)"
        );
        let two: Two = section().read(&f).unwrap();
        let typo = fields("topik = \"t\"\n");
        let e = section().only(&typo, &[field_names::<Two>()]).unwrap_err();
        assert!(e.message.contains("did you mean `topic`?"), "{}", e.message);
        assert_eq!(edit_distance("paralelism", "parallelism"), 1);
        assert_eq!(two.topic, "t");
    }

    #[test]
    fn secrets_are_never_quoted() {
        let text = "password = \"hunter2\"\n";
        let f = fields(text);
        let (_, v) = f.get_ref().iter().next().unwrap();
        let v: Spanned<toml::Value> =
            toml::Value::deserialize(toml::de::ValueDeserializer::from(v.clone()))
                .map(|x| Spanned::new(v.span(), x))
                .unwrap();
        let e = section().secret(&v, "password").unwrap_err();
        assert!(e.hide_line);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    use serde::Deserialize;
}
