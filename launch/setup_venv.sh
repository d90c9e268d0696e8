#!/usr/bin/env bash
# Idempotent environment set-up on a machine that will run learngene_jax: creates ./.venv (if missing) and
# installs the pinned stack for the given accelerator. Safe to run again (pip skips what is installed).
#
#   bash launch/setup_venv.sh cpu|gpu|tpu
#
# gpu: jax with CUDA 12 wheels from PyPI (NVIDIA driver >= 525 on the host).
# tpu: jax with libtpu (run on every TPU VM worker, e.g. through launch/tpu_vm.sh setup).
# cpu: also writes GLIBC_TUNABLES (huge pages for malloc's big blocks, learngene_jax/hostmem.py) into the venv's
# activate script: XLA's CPU backend runs faster with it; accelerators do not need it.
set -euo pipefail
accel=${1:-cpu}
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements.txt -e .
jax_version=$(grep '^jax==' requirements.txt | cut -d= -f3)
case "$accel" in
  cpu) python -m learngene_jax.hostmem activate .venv/bin/activate ;;  # huge pages for XLA's CPU buffers
  gpu) python -m pip install -q "jax[cuda12]==${jax_version}" ;;
  tpu) python -m pip install -q "jax[tpu]==${jax_version}" ;;
  *) echo "error: accelerator must be cpu, gpu or tpu, got '$accel'" >&2; exit 2 ;;
esac
python -c "import jax; print('learngene_jax ready:', jax.device_count(), 'devices', jax.devices()[0].platform)"
