#!/usr/bin/env bash
# A Ray worker node joining the head at RAY_HEAD_ADDRESS. Runs in the foreground
# (`ray start --block`): SIGTERM stops every Ray process it started, and nothing else.
#
#   RAY_HEAD_ADDRESS     the head's GCS address, host:port (compose: ray-head:6379)
#   RAY_GPUS_PER_WORKER  GPUs this worker takes: a number, or "all" (default all)
#   RAY_GPU_CLAIM_DIR    a folder shared by the workers of one host (a named volume in
#                        compose); with a number above, each worker claims GPUs there
#                        that no other worker holds. Without it, the worker takes the
#                        first RAY_GPUS_PER_WORKER GPUs it sees.
#   RAY_GPU_COUNT        the GPUs visible here (default: counted with nvidia-smi)
#   plus the node options of ray-head.sh (RAY_NODE_IP, RAY_NUM_CPUS, RAY_NUM_GPUS,
#   RAY_TEMP_DIR, ports)
#
# Trials share a GPU through fractions: `resources.gpus_per_trial: 0.25` in the sweep
# file runs four trials per GPU that Ray counts on this node.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_env RAY_HEAD_ADDRESS
refuse_placeholder RAY_AUTH_TOKEN ROPENOPE_STORAGE
gpus_per_worker=${RAY_GPUS_PER_WORKER:-all}
# Checked before any (( )) below: bash evaluates `x[$(command)]` inside arithmetic.
[[ "$gpus_per_worker" == all ]] || require_count RAY_GPUS_PER_WORKER
require_count RAY_GPU_COUNT
gpu_count=${RAY_GPU_COUNT:-}
if [[ -z "$gpu_count" ]]; then
    gpu_count=0
    if command -v nvidia-smi >/dev/null; then
        gpu_count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    fi
fi

if ((gpu_count > 0)) && [[ "$gpus_per_worker" != all ]]; then
    ((gpus_per_worker <= gpu_count)) ||
        die "RAY_GPUS_PER_WORKER=$gpus_per_worker but only $gpu_count GPUs are visible"
    if [[ -n "${RAY_GPU_CLAIM_DIR:-}" ]]; then
        claim_gpus "$gpu_count" "$gpus_per_worker" "$RAY_GPU_CLAIM_DIR" ||
            die "every GPU of this host is taken by another worker: run fewer ray-worker replicas"
        export CUDA_VISIBLE_DEVICES=$CLAIMED_GPUS
    else
        export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus_per_worker - 1)))
    fi
    RAY_NUM_GPUS=${RAY_NUM_GPUS:-$gpus_per_worker}
    log "using GPUs $CUDA_VISIBLE_DEVICES of $gpu_count"
fi

args=(start --block --disable-usage-stats --address "$RAY_HEAD_ADDRESS")
add_ray_node_opts args

log "joining the Ray head at $RAY_HEAD_ADDRESS"
exec ray "${args[@]}"
