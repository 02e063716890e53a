-- Why a delivery was cancelled: its webhook disabled or deleted, or superseded by a
-- redelivery (which it names). NULL for the others, and for those cancelled before.
ALTER TABLE deliveries ADD COLUMN cancel_reason TEXT;
