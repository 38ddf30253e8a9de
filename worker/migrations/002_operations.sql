-- Operations (`refundctl dlq`, `refundctl status`).

-- Dead letters re-published to the request topic by `refundctl dlq redrive`, keyed by
-- their place in the dead-letter topic: a dead letter is re-driven at most once.
-- A redrive claims its row, publishes, then fills in where the copy landed, all in one
-- transaction: the request_* columns are never NULL once committed.
CREATE TABLE dead_letter_redrives (
    dlq_topic          text NOT NULL,
    dlq_partition      integer NOT NULL CHECK (dlq_partition >= 0),
    dlq_offset         bigint NOT NULL CHECK (dlq_offset >= 0),
    source             text,        -- the dead letter's `source` header
    request_topic      text NOT NULL,
    request_partition  integer CHECK (request_partition >= 0),
    request_offset     bigint CHECK (request_offset >= 0),
    redriven_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

-- `refundctl status`: the last applied event and the oldest tombstone without a scan.
CREATE INDEX cancel_outcomes_created_at ON cancel_outcomes (created_at);
CREATE INDEX tombstones_created_at ON tombstones (created_at);
