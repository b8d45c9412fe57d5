#!/usr/bin/env bash
# The MLflow tracking server: runs and metrics in PostgreSQL, artifacts stored by the
# server itself (clients upload and download through it, so no node needs access to
# the artifact folder).
#
#   MLFLOW_BACKEND_STORE_URI      SQLAlchemy URL, e.g. postgresql+psycopg://USER:PASS@HOST:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  folder (or object-store URI) where artifacts are kept
#   MLFLOW_HOST                   listen address (default 127.0.0.1; compose: 0.0.0.0)
#   MLFLOW_PORT                   default 5000
#   MLFLOW_WORKERS                server worker processes (default 2)
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers accepted (MLflow's own variable; default:
#                                 localhost and private IPs; compose adds the service name)
#   MLFLOW_AUTH_ADMIN_PASSWORD    when set, the server runs MLflow's basic-auth app
#                                 (`--app-name basic-auth`): every request but /health needs
#                                 a user and password; the admin MLFLOW_AUTH_ADMIN_USERNAME
#                                 (default admin) is created with this password on the first
#                                 start. Clients send MLFLOW_TRACKING_USERNAME and
#                                 MLFLOW_TRACKING_PASSWORD. Without it, run the server only
#                                 behind a proxy that authenticates (README, "Cluster").
#   MLFLOW_FLASK_SERVER_SECRET_KEY  with basic auth: the key its CSRF tokens are signed with
#   MLFLOW_AUTH_DATABASE_URI      where the auth app keeps its users (default: SQLite in
#                                 MLFLOW_AUTH_DIR, default ~/mlflow-auth; compose: a volume)
#
# Job execution (MLflow's server-side job runner) is always off.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
refuse_placeholder MLFLOW_BACKEND_STORE_URI
MLFLOW_HOST=${MLFLOW_HOST:-127.0.0.1}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
require_port MLFLOW_PORT
require_count MLFLOW_WORKERS
if [[ "$MLFLOW_ARTIFACTS_DESTINATION" != *://* ]]; then
    mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION"
fi

export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
app=()
if [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]]; then
    # the auth app signs its CSRF tokens with this key (MLflow refuses to start without it)
    require_env MLFLOW_FLASK_SERVER_SECRET_KEY
    refuse_placeholder MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
    export MLFLOW_FLASK_SERVER_SECRET_KEY
    auth_dir=${MLFLOW_AUTH_DIR:-$HOME/mlflow-auth}
    mkdir -p "$auth_dir"
    chmod 700 "$auth_dir"
    # The auth app reads its settings from a file; it may hold a database password, so
    # it is private to this user. The admin password stays in the environment.
    (
        umask 077
        printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = %s\n' \
            "${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$auth_dir/basic_auth.db}" \
            "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" >"$auth_dir/basic_auth.ini"
    )
    export MLFLOW_AUTH_CONFIG_PATH=$auth_dir/basic_auth.ini MLFLOW_AUTH_ADMIN_PASSWORD
    app=(--app-name basic-auth)
    log "basic authentication on (admin user ${MLFLOW_AUTH_ADMIN_USERNAME:-admin})"
fi

log "serving on $MLFLOW_HOST:$MLFLOW_PORT"
# The store's URI holds the database password: `mlflow server` reads it from
# MLFLOW_BACKEND_STORE_URI (and the artifact folder from MLFLOW_ARTIFACTS_DESTINATION),
# so it never appears on the command line that `ps` shows.
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
exec mlflow server \
    --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts "${app[@]}"
