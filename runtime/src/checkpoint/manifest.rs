//! The checkpoint manifest: everything needed to restore a job, pointing at
//! state by chunk: its blake3 hash, its size, and where it is (a byte
//! range of a segment object). Stored as JSON at
//! `jobs/<job>/checkpoints/<id>.json`.

use serde::{Deserialize, Serialize};

/// The manifest format this wrun writes. Format 2 places chunks in
/// segments (`at`); format 1, whose chunks are one object each under
/// `chunks/`, is still read.
pub const MANIFEST_FORMAT: u32 = 2;

/// The manifest formats this wrun reads.
pub const MANIFEST_FORMATS_READ: [u32; 2] = [1, 2];

/// Where a chunk is: a byte range of a segment object (one object per
/// writer thread per checkpoint). Absent in format 1 manifests, whose
/// chunks are objects of their own (`chunks/<aa>/<hash>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Span {
    /// The segment's key in the store (`segments/<id>`).
    pub segment: String,
    /// The chunk's first byte in it.
    pub offset: u64,
}

/// A chunk as a reader needs it: its hash (verified on every read), its
/// size, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc<'a> {
    /// Its blake3.
    pub chunk: ChunkHash,
    /// Its size.
    pub bytes: u64,
    /// Its place in a segment; `None` for a format 1 chunk object.
    pub at: Option<&'a Span>,
}

/// A checkpoint's number within its job; increases by one per checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub use crate::ids::ChunkHash;

impl std::fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkHash({})", self.hex())
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChunkHash, D::Error> {
        let s = String::deserialize(d)?;
        ChunkHash::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not a blake3 chunk hash (64 lowercase hex digits)"
            ))
        })
    }
}

/// One key group's state in a checkpoint: a whole snapshot, and the
/// deltas written since, to apply in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeyGroupRef {
    /// The key group.
    pub key_group: u16,
    /// Its whole snapshot's chunk (`WRKG`).
    pub chunk: ChunkHash,
    /// The chunk's size.
    pub bytes: u64,
    /// Where the chunk is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Span>,
    /// Delta chunks (`WRKD`) on top of it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<ChunkRef>,
}

impl KeyGroupRef {
    /// A key group written whole into `r`, with no deltas yet.
    pub fn whole(key_group: u16, r: ChunkRef) -> KeyGroupRef {
        KeyGroupRef {
            key_group,
            chunk: r.chunk,
            bytes: r.bytes,
            at: r.at,
            deltas: Vec::new(),
        }
    }

    /// Its whole snapshot's chunk.
    pub fn loc(&self) -> Loc<'_> {
        Loc {
            chunk: self.chunk,
            bytes: self.bytes,
            at: self.at.as_ref(),
        }
    }

    /// Bytes of the snapshot and its deltas: what a restore reads.
    pub fn total_bytes(&self) -> u64 {
        self.bytes + self.deltas.iter().map(|d| d.bytes).sum::<u64>()
    }
}

/// A chunk, its size and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChunkRef {
    /// The chunk.
    pub chunk: ChunkHash,
    /// Its size.
    pub bytes: u64,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Span>,
}

impl ChunkRef {
    /// Where to read it.
    pub fn loc(&self) -> Loc<'_> {
        Loc {
            chunk: self.chunk,
            bytes: self.bytes,
            at: self.at.as_ref(),
        }
    }

    /// A ref to what `loc` names.
    pub fn of(loc: Loc<'_>) -> ChunkRef {
        ChunkRef {
            chunk: loc.chunk,
            bytes: loc.bytes,
            at: loc.at.cloned(),
        }
    }
}

/// One subtask's non-keyed operator state (from the guest's `snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubtaskStateRef {
    /// The subtask index.
    pub subtask: u32,
    /// The payload's chunk.
    pub chunk: ChunkHash,
    /// The chunk's size.
    pub bytes: u64,
    /// Where the chunk is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Span>,
}

impl SubtaskStateRef {
    /// Where to read it.
    pub fn loc(&self) -> Loc<'_> {
        Loc {
            chunk: self.chunk,
            bytes: self.bytes,
            at: self.at.as_ref(),
        }
    }
}

/// An operator's state in a checkpoint, addressed by operator ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OperatorStateRef {
    /// The 16-byte operator ID, hex.
    pub operator_id: String,
    /// The uid, when the operator has one.
    pub uid: Option<String>,
    /// The vertex name when the checkpoint was taken.
    pub name: String,
    /// Its parallelism then.
    pub parallelism: u32,
    /// The module that wrote the state (`blake3:<hex>`).
    pub module: String,
    /// The state format the module declared (name, version).
    pub state_format: Option<(String, u32)>,
    /// Keyed state, one entry per non-empty key group.
    pub key_groups: Vec<KeyGroupRef>,
    /// Non-keyed state, per subtask that returned any.
    pub operator_state: Vec<SubtaskStateRef>,
}

/// Where a source subtask was when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourcePosition {
    /// The source vertex.
    pub vertex: String,
    /// The subtask.
    pub subtask: u32,
    /// Lines read (file, stdin) or events generated (generator): a
    /// position of the subtask as a whole.
    pub position: u64,
    /// A split-based source's position per split it read (a JetStream
    /// stream, a Kafka partition): any subtask can take a split over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitState>,
}

/// One split of a source and the next position to read in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SplitState {
    /// The split (`stream/ORDERS`, `orders/3`).
    pub split: String,
    /// The next position (stream sequence, offset).
    pub next: u64,
}

/// Data a sink staged for a checkpoint and has not committed yet (a NATS
/// sink's messages, published once the checkpoint commits), kept as a
/// chunk so a recovery can commit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StagedRef {
    /// The checkpoint whose barrier staged it.
    pub checkpoint: u64,
    /// The chunk.
    pub chunk: ChunkHash,
    /// Its size.
    pub bytes: u64,
    /// Where the chunk is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Span>,
}

impl StagedRef {
    /// Where to read it.
    pub fn loc(&self) -> Loc<'_> {
        Loc {
            chunk: self.chunk,
            bytes: self.bytes,
            at: self.at.as_ref(),
        }
    }
}

/// What an exactly-once sink had committed, and what it staged, at the
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SinkState {
    /// The sink vertex.
    pub vertex: String,
    /// The subtask.
    #[serde(default)]
    pub subtask: u32,
    /// Bytes of the output file that precede this checkpoint's staged part
    /// (file sink).
    #[serde(default)]
    pub committed_bytes: u64,
    /// Size of the part staged for this checkpoint (file sink).
    #[serde(default)]
    pub staged_bytes: u64,
    /// What the sink staged and had not committed at the barrier, this
    /// checkpoint's last (message sinks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<StagedRef>,
}

/// A checkpoint's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CheckpointManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The job.
    pub job: String,
    /// This checkpoint.
    pub id: CheckpointId,
    /// When it was triggered (ms since the Unix epoch).
    pub triggered_at_ms: u64,
    /// Trigger to completion, in ms.
    pub duration_ms: u64,
    /// A hash of the job graph's shape, to notice a changed job.
    pub graph_fingerprint: String,
    /// The job's number of key groups; fixed for the life of its state.
    pub max_parallelism: u32,
    /// Operator state, by operator ID.
    pub operators: Vec<OperatorStateRef>,
    /// Source positions.
    pub sources: Vec<SourcePosition>,
    /// Sink commit points.
    pub sinks: Vec<SinkState>,
    /// Bytes of every chunk the checkpoint references.
    pub full_bytes: u64,
    /// Bytes this checkpoint wrote that earlier ones had not.
    pub new_bytes: u64,
    /// The job's final checkpoint: every source had reached the end of its
    /// input, and everything the job produced is in it (the sinks staged
    /// the tail under it). A resume from it has nothing to replay: it only
    /// finishes the sinks' commits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_ended: bool,
}

impl CheckpointManifest {
    /// A manifest of `job`'s checkpoint `id` with nothing in it yet.
    pub fn empty(job: &str, id: CheckpointId, max_parallelism: u32) -> CheckpointManifest {
        CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: job.to_string(),
            id,
            triggered_at_ms: 0,
            duration_ms: 0,
            graph_fingerprint: String::new(),
            max_parallelism,
            operators: Vec::new(),
            sources: Vec::new(),
            sinks: Vec::new(),
            full_bytes: 0,
            new_bytes: 0,
            input_ended: false,
        }
    }

    /// Every chunk the manifest references.
    pub fn chunks(&self) -> impl Iterator<Item = Loc<'_>> + '_ {
        self.operators
            .iter()
            .flat_map(|o| {
                o.key_groups
                    .iter()
                    .flat_map(|k| std::iter::once(k.loc()).chain(k.deltas.iter().map(|d| d.loc())))
                    .chain(o.operator_state.iter().map(|s| s.loc()))
            })
            .chain(
                self.sinks
                    .iter()
                    .flat_map(|s| s.staged.iter().map(|r| r.loc())),
            )
    }

    /// Points every chunk reference at what `f` returns for it (a copy
    /// into another store), and sets the format to this wrun's.
    pub fn relocate<E>(
        &mut self,
        mut f: impl FnMut(Loc<'_>) -> Result<ChunkRef, E>,
    ) -> Result<(), E> {
        fn set(chunk: &mut ChunkHash, bytes: &mut u64, at: &mut Option<Span>, r: ChunkRef) {
            (*chunk, *bytes, *at) = (r.chunk, r.bytes, r.at);
        }
        for o in &mut self.operators {
            for k in &mut o.key_groups {
                let r = f(k.loc())?;
                set(&mut k.chunk, &mut k.bytes, &mut k.at, r);
                for d in &mut k.deltas {
                    *d = f(d.loc())?;
                }
            }
            for st in &mut o.operator_state {
                let r = f(st.loc())?;
                set(&mut st.chunk, &mut st.bytes, &mut st.at, r);
            }
        }
        for s in &mut self.sinks {
            for st in &mut s.staged {
                let r = f(st.loc())?;
                set(&mut st.chunk, &mut st.bytes, &mut st.at, r);
            }
        }
        self.format = MANIFEST_FORMAT;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_references_its_deltas() {
        let h = |b: u8| ChunkHash([b; 32]);
        let m = CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: "j".into(),
            id: CheckpointId(1),
            triggered_at_ms: 0,
            duration_ms: 0,
            graph_fingerprint: String::new(),
            max_parallelism: 1,
            operators: vec![OperatorStateRef {
                operator_id: "00".repeat(16),
                uid: None,
                name: "op".into(),
                parallelism: 1,
                module: String::new(),
                state_format: None,
                key_groups: vec![KeyGroupRef {
                    key_group: 0,
                    chunk: h(1),
                    bytes: 10,
                    at: None,
                    deltas: vec![ChunkRef {
                        chunk: h(2),
                        bytes: 3,
                        at: Some(Span {
                            segment: "segments/x".into(),
                            offset: 7,
                        }),
                    }],
                }],
                operator_state: vec![SubtaskStateRef {
                    subtask: 0,
                    chunk: h(3),
                    bytes: 1,
                    at: None,
                }],
            }],
            sources: vec![],
            sinks: vec![],
            full_bytes: 0,
            new_bytes: 0,
            input_ended: false,
        };
        assert_eq!(
            m.chunks().map(|l| l.chunk).collect::<Vec<_>>(),
            [h(1), h(2), h(3)]
        );
        assert_eq!(m.chunks().nth(1).unwrap().at.unwrap().offset, 7);
        assert_eq!(m.operators[0].key_groups[0].total_bytes(), 13);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            serde_json::from_str::<CheckpointManifest>(&json).unwrap(),
            m
        );
    }
}
