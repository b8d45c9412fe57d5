#!/usr/bin/env bash
# The Ray head node: GCS, the dashboard and the Jobs API (`ropenope submit --address`).
# Runs in the foreground (`ray start --block`): SIGTERM stops every Ray process it
# started, and nothing else.
#
#   RAY_NODE_IP          this node's address as the cluster sees it (default: Ray's guess)
#   RAY_GCS_PORT         default 6379
#   RAY_DASHBOARD_HOST   dashboard/Jobs API listen address (default 127.0.0.1; compose: 0.0.0.0)
#   RAY_DASHBOARD_PORT   default 8265
#   RAY_NUM_CPUS, RAY_NUM_GPUS   resources this node offers trials (default: detected)
#   RAY_TEMP_DIR         this node's session folder (keep it short: socket paths are
#                        limited; two nodes on one host need two folders)
#   RAY_CLIENT_SERVER_PORT, RAY_DASHBOARD_AGENT_LISTEN_PORT, RAY_DASHBOARD_AGENT_GRPC_PORT,
#   RAY_METRICS_EXPORT_PORT, RAY_RUNTIME_ENV_AGENT_PORT, RAY_NODE_MANAGER_PORT,
#   RAY_OBJECT_MANAGER_PORT, RAY_MIN_WORKER_PORT, RAY_MAX_WORKER_PORT
#                        fixed ports (default: Ray's); set them to run two clusters on one host
#   RAY_AUTH_MODE, RAY_AUTH_TOKEN   Ray's own token authentication (compose: token)
#
# The sweep's stores come from the environment the trials inherit: ROPENOPE_STORAGE
# (the Optuna study), MLFLOW_TRACKING_URI, ROPENOPE_HOME (the runs folder).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

refuse_placeholder RAY_AUTH_TOKEN ROPENOPE_STORAGE
require_port RAY_GCS_PORT RAY_DASHBOARD_PORT RAY_CLIENT_SERVER_PORT
if [[ -n "${ROPENOPE_STORAGE:-}" ]]; then
    create_optuna_tables  # before the dashboard, whose role only reads, looks for them
fi

args=(start --head --block --disable-usage-stats
    --port "${RAY_GCS_PORT:-6379}"
    --dashboard-host "${RAY_DASHBOARD_HOST:-127.0.0.1}"
    --dashboard-port "${RAY_DASHBOARD_PORT:-8265}")
add_opt args --ray-client-server-port "${RAY_CLIENT_SERVER_PORT:-}"
add_ray_node_opts args

log "starting the Ray head on port ${RAY_GCS_PORT:-6379}, dashboard ${RAY_DASHBOARD_HOST:-127.0.0.1}:${RAY_DASHBOARD_PORT:-8265}"
exec ray "${args[@]}"
