-- The attempt as it was: the headers that cannot be rebuilt from the delivery (the signatures,
-- their timestamp, the webhook's own headers masked) as sent, and the response's headers as
-- received (bounded), each a JSON object. NULL for attempts recorded before.
ALTER TABLE attempts ADD COLUMN request_headers TEXT;
ALTER TABLE attempts ADD COLUMN response_headers TEXT;
