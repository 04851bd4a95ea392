//! Loading a job's operators: resolve each operator's `component` in the
//! module store (or as a path), then compile and pre-link it in the
//! sandbox (once per digest).

use super::{ModuleError, ModuleStore};
use crate::job::{JobGraph, VertexKind};
use crate::sandbox::{OperatorModule, Sandbox, SandboxError};
use std::collections::HashMap;
use std::sync::Arc;

impl LoadError {
    /// The module store could not be read (a disk error, the fleet's shared
    /// store unreachable): trying again later can help, unlike a module
    /// that is missing, corrupt or not a wrun operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoadError::Resolve {
                source: ModuleError::Io { .. },
                ..
            }
        )
    }
}

/// An operator whose component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its `component` does not resolve.
    #[error("operator '{operator}'")]
    Resolve {
        /// The vertex name.
        operator: String,
        /// Why.
        #[source]
        source: ModuleError,
    },
    /// Its component does not compile or is not a wrun operator.
    #[error("operator '{operator}'")]
    Load {
        /// The vertex name.
        operator: String,
        /// Why.
        #[source]
        source: SandboxError,
    },
    /// Its named outputs and the manifest's edges do not match.
    #[error("operator '{operator}': {detail}")]
    Outputs {
        /// The vertex name.
        operator: String,
        /// What does not match, and what to do.
        detail: String,
    },
}

/// Every named output of vertex `v`'s module is read by an edge, and every
/// edge reads an output the module declares: an unread output would lose
/// its events silently.
fn check_outputs(graph: &JobGraph, v: usize, module: &OperatorModule) -> Result<(), LoadError> {
    let name = &graph.vertices[v].name;
    let err = |detail: String| LoadError::Outputs {
        operator: name.clone(),
        detail,
    };
    let declared = |o: &str| module.outputs.iter().any(|d| d == o);
    for e in graph.edges.iter().filter(|e| e.from == v) {
        if let Some(o) = &e.output
            && !declared(o)
        {
            return Err(err(format!(
                "an [[edge]] reads its output '{o}' (from = \"{name}.{o}\"), but its module {} declares {}",
                module.digest,
                if module.outputs.is_empty() {
                    "no named outputs".to_string()
                } else {
                    format!("only [{}]", module.outputs.join(", "))
                }
            )));
        }
    }
    for o in &module.outputs {
        if !graph
            .edges
            .iter()
            .any(|e| e.from == v && e.output.as_deref() == Some(o.as_str()))
        {
            return Err(err(format!(
                "its module emits to a named output '{o}' that no [[edge]] reads, so its events would be lost; add an [[edge]] with from = \"{name}.{o}\""
            )));
        }
    }
    Ok(())
}

/// Resolves and compiles every operator's component, by vertex index.
/// Warns about stateful operators without a `uid`.
pub fn load_modules(
    graph: &JobGraph,
    store: &ModuleStore,
    sandbox: &Sandbox,
) -> Result<HashMap<usize, Arc<OperatorModule>>, LoadError> {
    let mut modules = HashMap::new();
    for (i, v) in graph.vertices.iter().enumerate() {
        let VertexKind::Operator { component, .. } = &v.kind else {
            continue;
        };
        let bytes = store
            .resolve(component)
            .map_err(|source| LoadError::Resolve {
                operator: v.name.clone(),
                source,
            })?;
        let module = sandbox.load(&bytes).map_err(|source| LoadError::Load {
            operator: v.name.clone(),
            source,
        })?;
        if module.imports_state && v.uid.is_none() {
            tracing::warn!(
                "operator '{}' keeps keyed state but has no `uid`: its state ID comes from its name and its inputs, so renaming it or changing what feeds it would orphan its state; give it a uid",
                v.name
            );
        }
        check_outputs(graph, i, &module)?;
        modules.insert(i, module);
    }
    Ok(modules)
}
