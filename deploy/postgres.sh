#!/usr/bin/env bash
# PostgreSQL for the cluster: one server, one database for the Optuna study and one
# for MLflow. Runs in the official postgres image (compose) and locally (the loopback
# test, with the binaries of the `pgserver` pip package or a system PostgreSQL).
#
#   PGDATA               data folder (created and initialised on first start)
#   POSTGRES_USER        the superuser: creates the databases and roles below at each
#                        start (deploy/roles.sql) and is used by no service
#   POSTGRES_PASSWORD    its password (scram-sha-256 over TCP)
#   OPTUNA_DB, MLFLOW_DB database names (default optuna, mlflow)
#   OPTUNA_DB_USER, OPTUNA_DB_PASSWORD        owns the Optuna database (the sweeps)
#   MLFLOW_DB_USER, MLFLOW_DB_PASSWORD        owns the MLflow database (its server)
#   DASHBOARD_DB_USER, DASHBOARD_DB_PASSWORD  reads the Optuna database (optuna-dashboard)
#   POSTGRES_HOST        listen address (default 127.0.0.1; compose: 0.0.0.0)
#   POSTGRES_PORT        default 5432
#   POSTGRES_SOCKET_DIR  Unix socket folder (default PGDATA)
#   PG_BIN               folder holding initdb/pg_ctl/postgres/psql (default: PATH)
#   PG_RUN_AS            user to run as when started as root (default postgres)
#
# The server runs in the foreground (exec), so its PID is this script's PID.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env PGDATA POSTGRES_USER POSTGRES_PASSWORD
refuse_placeholder POSTGRES_PASSWORD
require_env OPTUNA_DB_USER OPTUNA_DB_PASSWORD MLFLOW_DB_USER MLFLOW_DB_PASSWORD \
    DASHBOARD_DB_USER DASHBOARD_DB_PASSWORD
refuse_placeholder OPTUNA_DB_PASSWORD MLFLOW_DB_PASSWORD DASHBOARD_DB_PASSWORD
export OPTUNA_DB=${OPTUNA_DB:-optuna}
export MLFLOW_DB=${MLFLOW_DB:-mlflow}
POSTGRES_HOST=${POSTGRES_HOST:-127.0.0.1}
POSTGRES_PORT=${POSTGRES_PORT:-5432}
require_identifier POSTGRES_USER OPTUNA_DB MLFLOW_DB OPTUNA_DB_USER MLFLOW_DB_USER \
    DASHBOARD_DB_USER
require_port POSTGRES_PORT
[[ "$OPTUNA_DB" != "$MLFLOW_DB" ]] || die "OPTUNA_DB and MLFLOW_DB must differ"
roles=$(printf '%s\n' "$POSTGRES_USER" "$OPTUNA_DB_USER" "$MLFLOW_DB_USER" "$DASHBOARD_DB_USER")
[[ $(sort -u <<<"$roles" | wc -l) == 4 ]] ||
    die "POSTGRES_USER, OPTUNA_DB_USER, MLFLOW_DB_USER and DASHBOARD_DB_USER must all differ"
export OPTUNA_DB_USER OPTUNA_DB_PASSWORD MLFLOW_DB_USER MLFLOW_DB_PASSWORD \
    DASHBOARD_DB_USER DASHBOARD_DB_PASSWORD
POSTGRES_SOCKET_DIR=${POSTGRES_SOCKET_DIR:-$PGDATA}
if [[ -n "${PG_BIN:-}" ]]; then
    PATH="$PG_BIN:$PATH"
fi

# PostgreSQL refuses to run as root: prepare the folders, then run this same script
# as PG_RUN_AS (gosu in the official image; setpriv or runuser elsewhere).
if [[ "$(id -u)" == 0 ]]; then
    run_as=${PG_RUN_AS:-postgres}
    id "$run_as" >/dev/null 2>&1 || die "user $run_as does not exist; set PG_RUN_AS"
    mkdir -p "$PGDATA" "$POSTGRES_SOCKET_DIR"
    chown "$run_as:" "$PGDATA" "$POSTGRES_SOCKET_DIR"
    chmod 700 "$PGDATA"
    self=$(readlink -f "${BASH_SOURCE[0]}")
    if command -v gosu >/dev/null; then
        exec gosu "$run_as" bash "$self"
    elif command -v setpriv >/dev/null; then
        exec setpriv --reuid="$run_as" --regid="$(id -g "$run_as")" --init-groups \
            bash "$self"
    else
        exec runuser -u "$run_as" -- bash "$self"
    fi
fi

for tool in initdb pg_ctl postgres psql; do
    command -v "$tool" >/dev/null || die "$tool not found: set PG_BIN to PostgreSQL's bin folder"
done
mkdir -p "$PGDATA" "$POSTGRES_SOCKET_DIR"
chmod 700 "$PGDATA"

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initialising $PGDATA"
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    trap - EXIT
    # Other containers reach the server over the compose network: password only.
    # Who can connect at all is decided by POSTGRES_HOST (the listen address).
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi

# Create the databases that are missing, on a private start without TCP, so that a
# client (or a health check) never sees the server before both databases exist.
pg_ctl -D "$PGDATA" -w -l "$PGDATA/bootstrap.log" \
    -o "-c listen_addresses='' -p $POSTGRES_PORT -k $POSTGRES_SOCKET_DIR" start >/dev/null
log "databases $OPTUNA_DB, $MLFLOW_DB; roles $OPTUNA_DB_USER, $MLFLOW_DB_USER, $DASHBOARD_DB_USER"
if ! psql -h "$POSTGRES_SOCKET_DIR" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -q \
    -f "$(dirname "${BASH_SOURCE[0]}")/roles.sql" >/dev/null; then
    pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    die "could not create the databases and roles (deploy/roles.sql)"
fi
pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null

log "serving on $POSTGRES_HOST:$POSTGRES_PORT (databases $OPTUNA_DB, $MLFLOW_DB)"
exec postgres -D "$PGDATA" -c listen_addresses="$POSTGRES_HOST" -p "$POSTGRES_PORT" \
    -k "$POSTGRES_SOCKET_DIR"
