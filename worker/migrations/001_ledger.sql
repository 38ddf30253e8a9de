-- The refund ledger. Money is NUMERIC (exact); never a float.

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    player      text NOT NULL CHECK (length(player) BETWEEN 1 AND 256),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance     numeric NOT NULL CHECK (balance >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (player, currency)
);

-- Every balance equals the sum of its account's entries.
CREATE TABLE ledger_entries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    kind        text NOT NULL CHECK (kind IN ('opening', 'debit', 'refund')),
    amount      numeric NOT NULL,
    provider    text,
    tx          text,            -- the bet's provider tx id (debit and refund)
    cancel_id   text,            -- refund only: the provider's cancel id
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'debit') = (amount < 0) OR kind = 'opening'),
    CHECK (kind <> 'refund' OR cancel_id IS NOT NULL)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
-- A debit is refunded at most once, whatever the cancel id.
CREATE UNIQUE INDEX ledger_entries_one_refund_per_bet
    ON ledger_entries (provider, tx) WHERE kind = 'refund';

-- Bets and tips the ledger accepted, keyed by (provider, provider tx id).
CREATE TABLE bets (
    provider    text NOT NULL,
    tx          text NOT NULL,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    amount      numeric NOT NULL CHECK (amount > 0),
    bet_id      text,
    round_id    text,
    state       text NOT NULL CHECK (state IN ('open', 'settled', 'cancelled')),
    cancel_id   text,            -- the cancel that refunded it
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, tx),
    CHECK ((state = 'cancelled') = (cancel_id IS NOT NULL))
);

-- A cancel for a bet the ledger did not know: a later debit of that bet is refused.
CREATE TABLE tombstones (
    provider    text NOT NULL,
    tx          text NOT NULL,
    cancel_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, tx)
);

-- One decided outcome per (provider, cancel id), forever: the exactly-once guarantee.
CREATE TABLE cancel_outcomes (
    provider        text NOT NULL,
    cancel_id       text NOT NULL,
    request_digest  text NOT NULL,
    outcome         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, cancel_id)
);

-- The worker's consumed offsets, committed in the same transaction as the ledger
-- change; compare-and-set on next_offset fences a worker that lost its partition.
CREATE TABLE consumer_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
