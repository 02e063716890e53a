-- /readyz writes one row per node: readiness means a write commits now, so a node whose
-- database's disk is full answers 503 until writes succeed again.
CREATE TABLE readiness (node TEXT PRIMARY KEY, checked_at BIGINT NOT NULL);
