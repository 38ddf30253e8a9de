-- Least privilege: one group role (NOLOGIN) per kind of process. The log-in roles are
-- the operator's, one per process kind, each a member of its group, e.g.
--   CREATE ROLE refund_worker_app LOGIN PASSWORD '…' IN ROLE refund_worker;
-- (deploy/README.md). What each group may do:
--   refund_migrator  owns the schema's tables (DDL); `refundctl migrate` logs in as a
--                    member of it (the first run, which creates the roles, needs
--                    CREATEROLE or a superuser);
--   refund_worker    reads and writes the ledger tables: the worker and the operator
--                    commands (ledger, replay, dlq, status, cancel). Entries, outcomes
--                    and tombstones are append-only to it (no UPDATE, no DELETE), and
--                    it can delete nothing;
--   refund_ingress   only its reply-partition lease table (the ingress never touches
--                    the ledger; /readyz needs no table).
-- A later migration that creates a table gives it to refund_migrator and grants it to
-- the group that uses it, in the same file.
--
-- Roles are cluster-wide: several databases on one server share them, so a role that
-- exists already (or that a migration of another database creates meanwhile) is kept
-- as it is.

DO $$
DECLARE
    group_role text;
BEGIN
    FOREACH group_role IN ARRAY ARRAY['refund_migrator', 'refund_worker', 'refund_ingress']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = group_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', group_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
    -- Handing the tables to refund_migrator needs its privileges: a CREATEROLE migrator
    -- that just created the role is not a member (PostgreSQL 15) or has only ADMIN on it
    -- (16+). A superuser or a member of it (the steady state) grants nothing.
    IF NOT pg_has_role(current_user, 'refund_migrator', 'USAGE') THEN
        BEGIN
            EXECUTE format('GRANT refund_migrator TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    EXECUTE format(
        'GRANT USAGE, CREATE ON SCHEMA %I TO refund_migrator', current_schema()
    );
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO refund_worker, refund_ingress', current_schema()
    );
END
$$;

ALTER TABLE schema_migrations OWNER TO refund_migrator;
ALTER TABLE accounts OWNER TO refund_migrator;
ALTER TABLE ledger_entries OWNER TO refund_migrator;
ALTER TABLE bets OWNER TO refund_migrator;
ALTER TABLE tombstones OWNER TO refund_migrator;
ALTER TABLE cancel_outcomes OWNER TO refund_migrator;
ALTER TABLE consumer_offsets OWNER TO refund_migrator;
ALTER TABLE dead_letter_redrives OWNER TO refund_migrator;
ALTER TABLE reply_partition_leases OWNER TO refund_migrator;

-- The worker: balances, bets and offsets change; entries, outcomes and tombstones are
-- only ever added. Row locks (SELECT … FOR UPDATE) need UPDATE, which those have.
GRANT SELECT, INSERT, UPDATE ON accounts, bets, consumer_offsets, dead_letter_redrives
    TO refund_worker;
GRANT SELECT, INSERT ON ledger_entries, tombstones, cancel_outcomes TO refund_worker;

-- The ingress: lease, renew and release its reply partition.
GRANT SELECT, INSERT, UPDATE, DELETE ON reply_partition_leases TO refund_ingress;
