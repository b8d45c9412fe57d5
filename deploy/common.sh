# Helpers shared by the deploy scripts; sourced, never run. Bash only.
#
# Every service script takes its settings from environment variables (host, ports,
# data folders, URIs), so the same start-up runs in docker-compose.yml and in the
# loopback cluster test (tests/test_cluster.py) without Docker.

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }

die() {
    log "error: $*"
    exit 1
}

# require_env NAME...: fail with the names of the unset variables.
require_env() {
    local name missing=()
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "set ${missing[*]} (see .env.example)"
}

# refuse_placeholder NAME...: fail when a variable still holds a placeholder secret of
# .env.example ("change-me-..."): a cluster must never run with a published password.
refuse_placeholder() {
    local name
    for name in "$@"; do
        [[ "${!name:-}" != *change-me* ]] ||
            die "$name still holds the placeholder of .env.example: set a real secret in .env"
    done
}

# add_opt ARRAY FLAG VALUE: append "FLAG VALUE" to the named array when VALUE is set.
add_opt() {
    local -n _args=$1
    [[ -n "${3:-}" ]] && _args+=("$2" "$3")
    return 0
}

# claim_gpus TOTAL PER_WORKER DIR: pick PER_WORKER of the TOTAL visible GPUs that no
# other worker holds and set CLAIMED_GPUS to their indices ("0,1"). Call it directly,
# not in $(...): a subshell would drop the claim when it exits. The claim is an flock on
# DIR/gpu-<first>.lock kept on file descriptor 9 and inherited by the command the
# caller execs, so it lasts exactly as long as the worker: a stopped or crashed
# container frees its GPUs with no stale state. Needed because Docker gives every
# replica of a service the same devices (`count: 1` is GPU 0 for all of them).
claim_gpus() {
    local total=$1 per=$2 dir=$3 first i ids
    mkdir -p "$dir"
    for ((first = 0; first + per <= total; first += per)); do
        exec 9>"$dir/gpu-$first.lock"
        if flock -n 9; then
            ids=$first
            for ((i = first + 1; i < first + per; i++)); do ids+=",$i"; done
            CLAIMED_GPUS=$ids
            return 0
        fi
        exec 9>&-
    done
    return 1
}

# add_ray_node_opts ARRAY: node address, resources and the fixed ports, when set.
add_ray_node_opts() {
    local -n _node_args=$1
    add_opt _node_args --node-ip-address "${RAY_NODE_IP:-}"
    add_opt _node_args --temp-dir "${RAY_TEMP_DIR:-}"
    add_opt _node_args --num-cpus "${RAY_NUM_CPUS:-}"
    add_opt _node_args --num-gpus "${RAY_NUM_GPUS:-}"
    add_opt _node_args --dashboard-agent-listen-port "${RAY_DASHBOARD_AGENT_LISTEN_PORT:-}"
    add_opt _node_args --dashboard-agent-grpc-port "${RAY_DASHBOARD_AGENT_GRPC_PORT:-}"
    add_opt _node_args --metrics-export-port "${RAY_METRICS_EXPORT_PORT:-}"
    add_opt _node_args --runtime-env-agent-port "${RAY_RUNTIME_ENV_AGENT_PORT:-}"
    add_opt _node_args --node-manager-port "${RAY_NODE_MANAGER_PORT:-}"
    add_opt _node_args --object-manager-port "${RAY_OBJECT_MANAGER_PORT:-}"
    add_opt _node_args --min-worker-port "${RAY_MIN_WORKER_PORT:-}"
    add_opt _node_args --max-worker-port "${RAY_MAX_WORKER_PORT:-}"
}

# create_optuna_tables: create Optuna's tables in $ROPENOPE_STORAGE (idempotent) with the
# read-write role the sweeps use, waiting out a database that is still starting. The
# read-only dashboard role cannot create them, so the Ray head does it at start.
create_optuna_tables() {
    local attempt
    for attempt in $(seq 60); do
        if python -c 'import os, optuna; optuna.storages.RDBStorage(os.environ["ROPENOPE_STORAGE"])' \
            2>/dev/null; then
            return 0
        fi
        ((attempt < 60)) || die "cannot open the Optuna storage (see ROPENOPE_STORAGE)"
        sleep 2
    done
}

# Values from .env are checked before use: a number before arithmetic (bash evaluates
# `a[$(command)]` inside (( )), so an unchecked value runs code), a name before SQL.

# require_port NAME...: each set variable is a TCP port number (1-65535).
require_port() {
    local name value
    for name in "$@"; do
        value=${!name:-}
        [[ -z "$value" ]] && continue
        [[ "$value" =~ ^[0-9]{1,5}$ ]] && ((10#$value >= 1 && 10#$value <= 65535)) ||
            die "$name=$value is not a port number (1-65535)"
    done
}

# require_count NAME...: each set variable is a whole number (0-99999).
require_count() {
    local name value
    for name in "$@"; do
        value=${!name:-}
        [[ -z "$value" || "$value" =~ ^[0-9]{1,5}$ ]] || die "$name=$value is not a whole number"
    done
}

# require_identifier NAME...: each set variable is a plain PostgreSQL name (a letter or
# _, then letters, digits or _; at most 63), safe in SQL and in a URL.
require_identifier() {
    local name value
    for name in "$@"; do
        value=${!name:-}
        [[ -z "$value" || "$value" =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] ||
            die "$name=$value is not a plain name (letters, digits, _; a letter first)"
    done
}
