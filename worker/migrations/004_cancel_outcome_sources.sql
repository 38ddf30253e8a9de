-- `refundctl cancel show`: where the event a stored outcome was decided for sits in the
-- request topic. NULL for outcomes stored before this migration and for outcomes stored
-- by `refundctl replay`.
-- Nullable columns without a default: a catalog change, no rewrite of the table. The
-- check is NOT VALID (enforced on new rows, no scan of the existing ones under the
-- ACCESS EXCLUSIVE lock); `lock_timeout` bounds the wait for that lock.
ALTER TABLE cancel_outcomes
    ADD COLUMN source_topic text,
    ADD COLUMN source_partition integer,
    ADD COLUMN source_offset bigint,
    ADD CONSTRAINT cancel_outcomes_source CHECK (
        (source_topic IS NULL) = (source_partition IS NULL)
        AND (source_topic IS NULL) = (source_offset IS NULL)
        AND source_partition >= 0
        AND source_offset >= 0
    ) NOT VALID;
