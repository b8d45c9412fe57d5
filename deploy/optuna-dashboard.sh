#!/usr/bin/env bash
# optuna-dashboard on the sweep's study database (read the studies, trials, Pareto
# front), served by `ropenope dashboard`: GET and HEAD only, and only to requests whose
# Host header is on the allowlist (a DNS-rebinding page cannot delete or forge trials).
#
#   ROPENOPE_STORAGE                SQLAlchemy URL of the Optuna storage (compose: the
#                                   read-only dashboard role)
#   OPTUNA_DASHBOARD_HOST           listen address (default 127.0.0.1; compose: 0.0.0.0)
#   OPTUNA_DASHBOARD_PORT           default 8080
#   OPTUNA_DASHBOARD_ALLOWED_HOSTS  Host headers served besides 127.0.0.1, localhost and
#                                   [::1] on OPTUNA_DASHBOARD_PORT: comma-separated NAME
#                                   (any port) or NAME:PORT (compose: the published port)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env ROPENOPE_STORAGE
refuse_placeholder ROPENOPE_STORAGE
export OPTUNA_DASHBOARD_HOST=${OPTUNA_DASHBOARD_HOST:-127.0.0.1}
export OPTUNA_DASHBOARD_PORT=${OPTUNA_DASHBOARD_PORT:-8080}

require_port OPTUNA_DASHBOARD_PORT

# The dashboard only reads (its role may not create tables): wait until Optuna's tables
# exist, which the first writer (the Ray head, or the first sweep) creates; this also
# waits out a database that is still starting.
for attempt in $(seq 60); do
    if python -c 'import os, optuna
optuna.storages.RDBStorage(os.environ["ROPENOPE_STORAGE"], skip_table_creation=True).get_all_studies()' \
        2>/dev/null; then
        break
    fi
    ((attempt < 60)) || die "cannot read the Optuna storage (see ROPENOPE_STORAGE)"
    sleep 2
done

log "serving on $OPTUNA_DASHBOARD_HOST:$OPTUNA_DASHBOARD_PORT"
# The storage URL holds the database password: it is read from the environment, never
# put on the command line (which any user of the host sees in `ps`).
# `ropenope dashboard` reads it from ROPENOPE_STORAGE and the extra Host names from
# OPTUNA_DASHBOARD_ALLOWED_HOSTS.
exec ropenope dashboard --host "$OPTUNA_DASHBOARD_HOST" --port "$OPTUNA_DASHBOARD_PORT"

