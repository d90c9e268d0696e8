#!/usr/bin/env bash
# Run learngene_jax on one machine with several GPUs, or on several such machines.
#
# One host: a single process drives all local GPUs (the mesh spans every device; batches are split over them).
#   CONFIG=configs/tleg_s.py:stage=aux WORKDIR=runs/tleg_s_aux bash launch/gpu_host.sh
#
# Several hosts: run this script on every host with the same CONFIG and a WORKDIR on a shared filesystem
# and set
#   COORDINATOR   host:port of host 0, reachable from all hosts (e.g. 10.0.0.1:12345)
#   NUM_HOSTS     number of hosts
#   HOST_ID       0 .. NUM_HOSTS-1 (this host)
# Optional:
#   CUDA_VISIBLE_DEVICES  which local GPUs to use
#   EXTRA                 more flags, e.g. "--config.precision=bfloat16 --config.sharding.strategy=fsdp"
#   SETUP=1               first create/refresh the venv with jax[cuda12] (launch/setup_venv.sh gpu)
#   DRY_RUN=1             print the command instead of running it
set -euo pipefail
: "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
cd "$(dirname "$0")/.."
if [ "${SETUP:-0}" = 1 ]; then bash launch/setup_venv.sh gpu; fi
# XLA GPU settings that help throughput on one node (see docs/scale.md).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
cmd=(python -m learngene_jax.main --config="$CONFIG" --workdir="$WORKDIR")
if [ -n "${COORDINATOR:-}" ]; then
  : "${NUM_HOSTS:?set NUM_HOSTS with COORDINATOR}" "${HOST_ID:?set HOST_ID with COORDINATOR}"
  cmd+=(--distributed=on --coordinator_address="$COORDINATOR" --num_processes="$NUM_HOSTS" --process_id="$HOST_ID")
else
  cmd+=(--distributed=off)
fi
# shellcheck disable=SC2206
cmd+=(${EXTRA:-})
if [ "${DRY_RUN:-0}" = 1 ]; then echo "${cmd[*]}"; exit 0; fi
[ -d .venv ] && . .venv/bin/activate
exec "${cmd[@]}"
