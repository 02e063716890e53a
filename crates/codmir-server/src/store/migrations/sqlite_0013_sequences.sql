-- The last sequence number given to an event about each resource, on the resource's own row:
-- a new ticket or project is inserted with the numbers its creating unit gave (no statement
-- more on the hot path), and a later unit takes the next ones with an UPDATE … RETURNING that
-- holds the row until commit, so numbers follow commit order without gaps.
ALTER TABLE tickets ADD COLUMN last_sequence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN last_sequence BIGINT NOT NULL DEFAULT 0;
