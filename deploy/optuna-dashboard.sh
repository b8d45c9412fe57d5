#!/usr/bin/env bash
# optuna-dashboard on the sweep's study database (read the studies, trials, Pareto
# front; the same storage URL the sweep driver writes to).
#
#   ROPENOPE_STORAGE         SQLAlchemy URL of the Optuna storage
#   OPTUNA_DASHBOARD_HOST    listen address (default 127.0.0.1; compose: 0.0.0.0)
#   OPTUNA_DASHBOARD_PORT    default 8080
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env ROPENOPE_STORAGE
refuse_placeholder ROPENOPE_STORAGE
export OPTUNA_DASHBOARD_HOST=${OPTUNA_DASHBOARD_HOST:-127.0.0.1}
export OPTUNA_DASHBOARD_PORT=${OPTUNA_DASHBOARD_PORT:-8080}

# optuna-dashboard opens the storage without creating Optuna's tables: create them
# (idempotent; also waits out a database that is still starting).
for attempt in $(seq 30); do
    if python -c 'import os, optuna; optuna.storages.RDBStorage(os.environ["ROPENOPE_STORAGE"])' \
        2>/dev/null; then
        break
    fi
    ((attempt < 30)) || die "cannot open the Optuna storage (see ROPENOPE_STORAGE)"
    sleep 2
done

log "serving on $OPTUNA_DASHBOARD_HOST:$OPTUNA_DASHBOARD_PORT"
# The storage URL holds the database password: it is read from the environment, never
# put on the command line (which any user of the host sees in `ps`).
exec python -c 'import os, optuna_dashboard
optuna_dashboard.run_server(os.environ["ROPENOPE_STORAGE"],
    host=os.environ["OPTUNA_DASHBOARD_HOST"], port=int(os.environ["OPTUNA_DASHBOARD_PORT"]))'

