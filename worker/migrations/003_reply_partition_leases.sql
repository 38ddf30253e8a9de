-- Each ingress instance leases the reply partition it reads, so several instances
-- never share one (a reply must reach the instance that waits for it).
CREATE TABLE reply_partition_leases (
    topic       text NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    owner       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);
