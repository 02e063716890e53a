-- Each claim of an Idempotency-Key has a token of its own. The answer is written by the unit of
-- work of the request, in its transaction, only under its own token; a claim left without an
-- answer (its node died, its database crashed) is taken over by a retry after a bound, with a
-- new token, so the stale request can no longer commit under the key.
ALTER TABLE idempotency_keys ADD COLUMN claim TEXT;
