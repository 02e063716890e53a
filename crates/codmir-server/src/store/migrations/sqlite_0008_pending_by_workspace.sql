-- A workspace's pending deliveries, counted against its quota (--max-pending-per-workspace)
-- before a replay, a redelivery or a fan-out: only pending rows are in it, so the count costs
-- what is pending, not the workspace's whole history.
CREATE INDEX deliveries_pending_workspace ON deliveries(workspace_id) WHERE status = 'pending';
