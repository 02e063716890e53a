-- When a webhook removes itself (`expires_at`): `codmir listen`'s temporary webhook, renewed
-- while the command runs, so that one left by a killed command does not outlive it for long.
ALTER TABLE webhooks ADD COLUMN expires_at BIGINT;
