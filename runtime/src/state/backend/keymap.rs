//! One key's map state, ordered by map key.
//!
//! Most maps hold one entry or a few: a key's pending timers, the windows
//! a key has open. A `BTreeMap` allocates a node of eleven slots (over
//! half a kilobyte) for the first entry, so a map stays a sorted vector
//! (found by binary search) up to [`SMALL`] entries and becomes a B-tree
//! only beyond.

use std::collections::BTreeMap;

/// Entries a map keeps in a sorted vector before it becomes a B-tree.
const SMALL: usize = 16;

type Entry = (Vec<u8>, Vec<u8>);

/// One key's map state: values by map key, ordered by map key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMap {
    /// Up to [`SMALL`] entries, sorted by map key.
    Small(Vec<Entry>),
    /// More.
    Large(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl Default for KeyMap {
    fn default() -> KeyMap {
        KeyMap::new()
    }
}

impl KeyMap {
    /// An empty map.
    pub fn new() -> KeyMap {
        KeyMap::Small(Vec::new())
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        match self {
            KeyMap::Small(v) => v.len(),
            KeyMap::Large(m) => m.len(),
        }
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `k`.
    pub fn get(&self, k: &[u8]) -> Option<&Vec<u8>> {
        match self {
            KeyMap::Small(v) => v
                .binary_search_by(|(mk, _)| mk.as_slice().cmp(k))
                .ok()
                .map(|i| &v[i].1),
            KeyMap::Large(m) => m.get(k),
        }
    }

    /// Sets `k` to `value`; returns the value it replaced.
    pub fn insert(&mut self, k: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        match self {
            KeyMap::Small(v) => match v.binary_search_by(|(mk, _)| mk.as_slice().cmp(&k)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) if v.len() < SMALL => {
                    v.insert(i, (k, value));
                    None
                }
                Err(_) => {
                    let mut m: BTreeMap<Vec<u8>, Vec<u8>> = std::mem::take(v).into_iter().collect();
                    m.insert(k, value);
                    *self = KeyMap::Large(m);
                    None
                }
            },
            KeyMap::Large(m) => m.insert(k, value),
        }
    }

    /// Removes `k`; returns its value.
    pub fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        match self {
            KeyMap::Small(v) => v
                .binary_search_by(|(mk, _)| mk.as_slice().cmp(k))
                .ok()
                .map(|i| v.remove(i).1),
            KeyMap::Large(m) => m.remove(k),
        }
    }

    /// The entries, ordered by map key.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            KeyMap::Small(v) => Iter::Small(v.iter()),
            KeyMap::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// The map keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.iter().map(|(k, _)| k)
    }
}

/// The entries of a [`KeyMap`], ordered by map key.
pub enum Iter<'a> {
    /// Of a small map.
    Small(std::slice::Iter<'a, Entry>),
    /// Of a large one.
    Large(std::collections::btree_map::Iter<'a, Vec<u8>, Vec<u8>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Vec<u8>, &'a Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Large(i) => i.next(),
        }
    }
}

impl<'a> IntoIterator for &'a KeyMap {
    type Item = (&'a Vec<u8>, &'a Vec<u8>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<Entry> for KeyMap {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> KeyMap {
        let mut m = KeyMap::new();
        for (k, v) in entries {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_behaves_as_a_btree_map_small_and_large() {
        let mut model = BTreeMap::new();
        let mut m = KeyMap::new();
        // Keys in a scrambled order, some twice, some removed, across the
        // change from vector to tree.
        for i in 0..200u32 {
            let k = ((i * 7919) % 61).to_be_bytes().to_vec();
            if i % 5 == 4 {
                assert_eq!(m.remove(&k), model.remove(&k), "remove {i}");
            } else {
                let v = i.to_le_bytes().to_vec();
                assert_eq!(
                    m.insert(k.clone(), v.clone()),
                    model.insert(k, v),
                    "insert {i}"
                );
            }
            assert_eq!(m.len(), model.len());
            assert!(m.iter().eq(model.iter()), "order after {i}");
            if i == 10 {
                assert!(matches!(m, KeyMap::Small(_)));
            }
        }
        assert!(matches!(m, KeyMap::Large(_)));
        for k in model.keys() {
            assert_eq!(m.get(k), model.get(k));
        }
        assert_eq!(m.get(b"absent"), None);
    }
}
