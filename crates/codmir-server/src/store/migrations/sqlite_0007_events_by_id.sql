-- A replay's time window is read by id range on events_workspace (ids start with their
-- creation time: `id::floor`), so events need no index on their time: one B-tree fewer to
-- update per event.
DROP INDEX events_workspace_created;
