-- The fan-out's cache of each workspace's webhooks (store/fanout.rs): every write to a
-- webhook that matters to delivery bumps its workspace's version in the same transaction,
-- whatever code path or node made it. The failure-run counters, written by outcomes, do not.
ALTER TABLE workspaces ADD COLUMN webhooks_version BIGINT NOT NULL DEFAULT 0;
CREATE FUNCTION codmir_webhooks_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE workspaces SET webhooks_version = webhooks_version + 1 WHERE id = OLD.workspace_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE workspaces SET webhooks_version = webhooks_version + 1 WHERE id = NEW.workspace_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER webhooks_version AFTER INSERT OR DELETE OR UPDATE OF workspace_id, url, events,
    project_ids, description, secret, enabled, disabled_reason, disabled_at, max_in_flight,
    rate_limit_per_second, headers, previous_secret, previous_secret_until
    ON webhooks FOR EACH ROW EXECUTE FUNCTION codmir_webhooks_changed();
-- Leased deliveries are pending ones: releasing a node's leases scans the pending index
-- instead of keeping an index of its own, written twice per delivery (lease, outcome).
DROP INDEX deliveries_leased;
