//! Identities (API key names) interned to 16-bit ids, so the keys of rules grouped by
//! identity stay the fixed-size [`WindowKey`](super::window::WindowKey) of every other rule.
//!
//! Names come from the configured API keys (a record's `identity` is the name of a key that
//! was valid), so the table is small and bounded by configuration, not by traffic. It never
//! forgets a name: an id stays valid for every key that holds it, across hot reloads (the
//! rebuilt engine shares the table). Beyond [`MAX_IDENTITIES`] names (after that many keys were
//! ever configured in one process) a new name is not interned: its requests count under
//! their source, like anonymous ones, and [`Identities::overflowed`] counts them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// At most this many distinct identities get their own counters (ids `0..=65534`).
pub(crate) const MAX_IDENTITIES: usize = 65_535;

#[derive(Debug, Default)]
struct Table {
    ids: HashMap<Arc<str>, u16>,
    names: Vec<Arc<str>>,
}

/// The interning table (shared by an engine and the engines rebuilt from it).
#[derive(Debug, Default)]
pub(crate) struct Identities {
    table: RwLock<Table>,
    overflowed: AtomicU64,
}

impl Identities {
    /// The id of `name`, interning it if new; `None` when the table is full (counted).
    pub(crate) fn intern(&self, name: &Arc<str>) -> Option<u16> {
        let read = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = read.ids.get(name) {
            return Some(*id);
        }
        drop(read);
        self.intern_new(name)
    }

    fn intern_new(&self, name: &Arc<str>) -> Option<u16> {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = table.ids.get(name) {
            return Some(*id);
        }
        let id = u16::try_from(table.names.len())
            .ok()
            .filter(|_| table.names.len() < MAX_IDENTITIES);
        let Some(id) = id else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        table.names.push(name.clone());
        table.ids.insert(name.clone(), id);
        Some(id)
    }

    /// The name interned as `id`.
    pub(crate) fn name(&self, id: u16) -> Option<Arc<str>> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.names.get(usize::from(id)).cloned()
    }

    /// Requests of identities that found the table full, counted under their source.
    #[cfg(test)]
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Distinct identities interned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_stable_ids_until_the_table_is_full() {
        let t = Identities::default();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        assert_eq!(t.intern(&alice), Some(0));
        assert_eq!(t.intern(&bob), Some(1));
        assert_eq!(t.intern(&"alice".into()), Some(0));
        assert_eq!(t.name(1).as_deref(), Some("bob"));
        assert_eq!(t.name(2), None);
        for i in 2..MAX_IDENTITIES {
            assert!(t.intern(&Arc::from(format!("k{i}"))).is_some());
        }
        assert_eq!(t.len(), 65_535);
        assert_eq!(t.intern(&"one too many".into()), None);
        assert_eq!(t.intern(&"one too many".into()), None);
        assert_eq!(t.overflowed(), 2);
        assert_eq!(t.intern(&bob), Some(1), "known names keep their id");
        assert_eq!(t.name(65_534).as_deref(), Some("k65534"));
    }
}
