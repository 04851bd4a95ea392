//! `wrun:operator/state`: batched keyed state calls onto the subtask's
//! [`KeyedState`](crate::state::KeyedState). Misuse (a key outside the
//! subtask's key groups, an oversized key, a kind mismatch) traps the guest
//! with a message that says what to fix.

use super::SubtaskData;
use crate::sandbox::bindings::wrun::operator::{
    state::Host,
    types::{Entry, MapEntry},
};
use crate::state::StateKind;

type Bytes = Vec<u8>;

impl Host for SubtaskData {
    fn value_get_many(
        &mut self,
        name: String,
        keys: Vec<Bytes>,
    ) -> wasmtime::Result<Vec<Option<Bytes>>> {
        let id = self.state.id(&name, StateKind::Value)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            out.push(self.state.value_get(id, k)?);
        }
        Ok(out)
    }

    fn value_put_many(&mut self, name: String, entries: Vec<Entry>) -> wasmtime::Result<()> {
        let id = self.state.id(&name, StateKind::Value)?;
        for e in entries {
            self.state.value_put(id, e.key, e.value)?;
        }
        Ok(())
    }

    fn list_get_many(
        &mut self,
        name: String,
        keys: Vec<Bytes>,
    ) -> wasmtime::Result<Vec<Vec<Bytes>>> {
        let id = self.state.id(&name, StateKind::List)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            out.push(self.state.list_get(id, k)?);
        }
        Ok(out)
    }

    fn list_append_many(
        &mut self,
        name: String,
        items: Vec<(Bytes, Bytes)>,
    ) -> wasmtime::Result<()> {
        let id = self.state.id(&name, StateKind::List)?;
        for (k, v) in items {
            self.state.list_append(id, k, v)?;
        }
        Ok(())
    }

    fn list_put_many(
        &mut self,
        name: String,
        lists: Vec<(Bytes, Vec<Bytes>)>,
    ) -> wasmtime::Result<()> {
        let id = self.state.id(&name, StateKind::List)?;
        for (k, l) in lists {
            self.state.list_put(id, k, l)?;
        }
        Ok(())
    }

    fn map_get_many(
        &mut self,
        name: String,
        keys: Vec<(Bytes, Bytes)>,
    ) -> wasmtime::Result<Vec<Option<Bytes>>> {
        let id = self.state.id(&name, StateKind::Map)?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, mk) in &keys {
            out.push(self.state.map_get(id, k, mk)?);
        }
        Ok(out)
    }

    fn map_put_many(&mut self, name: String, entries: Vec<MapEntry>) -> wasmtime::Result<()> {
        let id = self.state.id(&name, StateKind::Map)?;
        for e in entries {
            self.state.map_put(id, e.key, e.map_key, e.value)?;
        }
        Ok(())
    }

    fn map_entries(&mut self, name: String, key: Bytes) -> wasmtime::Result<Vec<(Bytes, Bytes)>> {
        let id = self.state.id(&name, StateKind::Map)?;
        Ok(self.state.map_entries(id, &key)?)
    }

    fn clear_many(&mut self, name: String, keys: Vec<Bytes>) -> wasmtime::Result<()> {
        let Some(kind) = self
            .state
            .names()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
        else {
            return Ok(());
        };
        let id = self.state.id(&name, kind)?;
        for k in &keys {
            self.state.clear(id, k)?;
        }
        Ok(())
    }
}
