#!/usr/bin/env bash
# Run learngene_jax on a (multi-host) Cloud TPU VM slice. Every worker runs the same command; main.py calls
# jax.distributed.initialize() (auto-detected on TPU VMs), each process reads its own shard of the data, and
# Orbax writes checkpoints from all processes together.
#
# Set (environment variables):
#   TPU_NAME      name of the TPU VM, e.g. learngene-v4
#   ZONE          e.g. us-central2-b
#   ACCELERATOR   e.g. v4-32 (4 hosts x 4 chips) or v5litepod-16
#   RUNTIME       TPU VM image, e.g. tpu-ubuntu2204-base
#   PROJECT       (optional) gcloud project; else the gcloud default
#   CONFIG        e.g. configs/tleg_s.py:stage=aux
#   WORKDIR       a directory every worker sees at the same path: a Filestore/NFS mount or a gcsfuse mount
#                 of a bucket, e.g. /gcs/my-bucket/runs/tleg_s_aux (the workdir is a filesystem path)
#   EXTRA         (optional) more flags, e.g. "--config.data.data_dir=/gcs/my-bucket/tfds
#                 --config.distill.teacher_init=/gcs/my-bucket/levit_384"
#   SPOT=1        (optional) create a spot/preemptible VM; rerunning `run` resumes from WORKDIR
#   DRY_RUN=1     (optional) print the gcloud commands instead of running them
#
# Steps (each idempotent; run them in order, or `all`):
#   bash launch/tpu_vm.sh create    # create the slice
#   bash launch/tpu_vm.sh copy      # copy this checkout to ~/learngene_jax on every worker
#   bash launch/tpu_vm.sh setup     # venv with jax[tpu] on every worker (launch/setup_venv.sh tpu)
#   bash launch/tpu_vm.sh run       # the same training command on --worker=all
#   bash launch/tpu_vm.sh delete    # delete the slice
set -euo pipefail
step=${1:?usage: tpu_vm.sh create|copy|setup|run|delete|all}
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
project_flag=${PROJECT:+--project=$PROJECT}
gcloud_tpu() {
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "gcloud compute tpus tpu-vm $*"; else gcloud compute tpus tpu-vm "$@"; fi
}
on_all_workers() {
  gcloud_tpu ssh "$TPU_NAME" --zone="$ZONE" $project_flag --worker=all --command="$1"
}
repo=$(cd "$(dirname "$0")/.." && pwd)
case "$step" in
  create)
    : "${ACCELERATOR:?set ACCELERATOR}" "${RUNTIME:?set RUNTIME}"
    gcloud_tpu create "$TPU_NAME" --zone="$ZONE" $project_flag --accelerator-type="$ACCELERATOR" \
      --version="$RUNTIME" ${SPOT:+--spot} ;;
  copy)
    tarball=$(mktemp -d)/learngene_jax.tgz
    git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
    gcloud_tpu scp "$tarball" "$TPU_NAME:~/learngene_jax.tgz" --zone="$ZONE" $project_flag --worker=all
    on_all_workers "mkdir -p ~/learngene_jax && tar -xzf ~/learngene_jax.tgz -C ~/learngene_jax" ;;
  setup)
    on_all_workers "cd ~/learngene_jax && bash launch/setup_venv.sh tpu" ;;
  run)
    : "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
    on_all_workers "cd ~/learngene_jax && . .venv/bin/activate && python -m learngene_jax.main \
      --config=$CONFIG --workdir=$WORKDIR --distributed=on ${EXTRA:-}" ;;
  delete)
    gcloud_tpu delete "$TPU_NAME" --zone="$ZONE" $project_flag --quiet ;;
  all)
    for s in create copy setup run delete; do bash "$0" "$s"; done ;;
  *) echo "error: unknown step '$step' (create|copy|setup|run|delete|all)" >&2; exit 2 ;;
esac
