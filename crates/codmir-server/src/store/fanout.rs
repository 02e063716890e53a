//! The enabled webhooks of each workspace as the fan-out of an event needs them, kept between
//! units of work: loading them means a query, parsing their JSON columns and opening each
//! sealed secret, once per event on the writer's critical path otherwise.
//!
//! Each workspace row carries `webhooks_version`, which database triggers bump in the
//! transaction of every write to a webhook that matters to delivery (migration 0006), so a
//! write made by any node, through any code path, is seen: a unit of work reads the version
//! (one primary-key lookup) and uses the cached list only when it was loaded at that version.
//! The list is read after the version, in the same transaction, so a list can be newer than
//! its version but never older.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use codmir_core::webhook::Webhook;

/// One workspace's enabled webhooks, shared by every delivery made from them.
pub type Webhooks = Arc<[Arc<Webhook>]>;

/// More workspaces than this and the cache starts over: memory stays bounded by it whatever
/// the number of tenants, and a busy workspace is back after one load.
const MAX_WORKSPACES: usize = 4096;

#[derive(Default)]
pub(crate) struct FanoutCache {
    by_workspace: Mutex<HashMap<String, (i64, Webhooks)>>,
}

impl FanoutCache {
    /// The list cached for `workspace` at `version`, if that is the one cached.
    pub(crate) fn get(&self, workspace: &str, version: i64) -> Option<Webhooks> {
        let map = self
            .by_workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(workspace) {
            Some((v, hooks)) if *v == version => Some(hooks.clone()),
            _ => None,
        }
    }

    pub(crate) fn put(&self, workspace: &str, version: i64, hooks: Webhooks) {
        let mut map = self
            .by_workspace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_WORKSPACES && !map.contains_key(workspace) {
            map.clear();
        }
        match map.get_mut(workspace) {
            // Units of work on PostgreSQL run concurrently: one that read an older version
            // must not replace a newer list.
            Some(entry) if entry.0 > version => {}
            Some(entry) => *entry = (version, hooks),
            None => {
                map.insert(workspace.to_owned(), (version, hooks));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_served_only_at_its_version_and_never_replaced_by_an_older_one() {
        let cache = FanoutCache::default();
        assert!(cache.get("ws", 0).is_none());
        cache.put("ws", 3, Arc::from(Vec::new()));
        assert!(cache.get("ws", 3).is_some());
        assert!(cache.get("ws", 4).is_none());
        cache.put("ws", 2, Arc::from(Vec::new()));
        assert!(
            cache.get("ws", 3).is_some(),
            "an older load replaced a newer"
        );
        assert!(cache.get("ws", 2).is_none());
    }
}
