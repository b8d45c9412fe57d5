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
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
refuse_placeholder MLFLOW_BACKEND_STORE_URI
MLFLOW_HOST=${MLFLOW_HOST:-127.0.0.1}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
if [[ "$MLFLOW_ARTIFACTS_DESTINATION" != *://* ]]; then
    mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION"
fi

log "serving on $MLFLOW_HOST:$MLFLOW_PORT"
# The store's URI holds the database password: `mlflow server` reads it from
# MLFLOW_BACKEND_STORE_URI (and the artifact folder from MLFLOW_ARTIFACTS_DESTINATION),
# so it never appears on the command line that `ps` shows.
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
exec mlflow server \
    --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts
