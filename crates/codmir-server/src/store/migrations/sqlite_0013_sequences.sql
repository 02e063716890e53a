-- The last sequence number given to an event about each resource (a ticket or a project):
-- taken in the unit of work that stores the event, under this row's lock, so numbers follow
-- commit order without gaps.
-- WITHOUT ROWID: the key is the row, one B-tree to write instead of a table and its index.
CREATE TABLE sequences (
    resource_id TEXT PRIMARY KEY,
    last BIGINT NOT NULL
) WITHOUT ROWID;
