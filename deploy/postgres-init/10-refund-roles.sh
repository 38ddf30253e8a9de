#!/bin/sh
# Runs once, on an empty data volume, as the bootstrap superuser (the postgres image's
# /docker-entrypoint-initdb.d; mounted by deploy/compose.yaml). One log-in role per
# process kind, each a member of the group role the migrations grant to
# (worker/migrations/005_roles.sql creates the same NOLOGIN group roles when they are
# missing, and keeps them when they exist):
#   refund_migrator_app  `refundctl migrate` (DDL: CREATE on the schema)
#   refund_worker_app    the workers and the operator commands (the ledger tables)
#   refund_ingress_app   the ingress (its reply-partition lease table only)
# The passwords are DEV PLACEHOLDERS unless REFUND_*_DB_PASSWORD are set (compose.yaml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v migrator_password="$REFUND_MIGRATOR_DB_PASSWORD" \
  -v worker_password="$REFUND_WORKER_DB_PASSWORD" \
  -v ingress_password="$REFUND_INGRESS_DB_PASSWORD" <<'SQL'
CREATE ROLE refund_migrator NOLOGIN;
CREATE ROLE refund_worker NOLOGIN;
CREATE ROLE refund_ingress NOLOGIN;
CREATE ROLE refund_migrator_app LOGIN PASSWORD :'migrator_password' IN ROLE refund_migrator;
CREATE ROLE refund_worker_app LOGIN PASSWORD :'worker_password' IN ROLE refund_worker;
CREATE ROLE refund_ingress_app LOGIN PASSWORD :'ingress_password' IN ROLE refund_ingress;
GRANT USAGE, CREATE ON SCHEMA public TO refund_migrator;
GRANT USAGE ON SCHEMA public TO refund_worker, refund_ingress;
SQL
