#!/usr/bin/env bash
# Issue 26.1 measured: configs/nanogpt_shakespeare_char.py (ours, JAX) against nanoGPT's own train.py (PyTorch) on the
# same machine, same text, same thread count, each run in its own process, alternating ours / nanoGPT per seed
# (A/B/A/B ...). Records one JSON per run under OUT/results/ and their means in OUT/summary.json:
#   - ours: final.json eval_loss, the whole validation split in non-overlapping 64-character windows (nats/char);
#   - nanoGPT: the same whole-split loss computed from its ckpt.pt, its estimate_loss on 200 validation batches
#     (eval_iters=200, recomputed from ckpt.pt with its get_batch sampling) and the 20-batch estimate its run printed;
#   - both: tokens/s of training (12 × 64 tokens per step) from their log lines (nanoGPT: every step; ours: every 50),
#     leaving out the first interval (JAX compiles there) and every one that holds an evaluation; wall time, host,
#     versions, the command.
# launch/shakespeare_char_ab.py has the exact definitions.
#
#   git clone https://github.com/karpathy/nanoGPT ~/nanoGPT && git -C ~/nanoGPT checkout 3adf61e
#   curl -O https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
#   NANOGPT=~/nanoGPT INPUT=input.txt bash launch/shakespeare_char_ab.sh runs/shakespeare_char_ab
#
# input.txt: 1,115,394 bytes, sha256 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed (recorded per
# run). nanoGPT's data are prepared by its own data/shakespeare_char/prepare.py, offline (input.txt is put beside it,
# so it downloads nothing; it needs numpy and requests), in a copy under OUT/nanogpt/ (the checkout is not written).
# nanoGPT runs the README's CPU command (`python train.py config/train_shakespeare_char.py --device=cpu
# --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
# --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`) plus --out_dir and
# --always_save_checkpoint=True (ckpt.pt then holds the model of its last evaluation, after 2000 steps, instead of the
# best of its 20-batch estimates; training is unchanged). Its seed is hard-coded, torch.manual_seed(1337 +
# seed_offset): seed S runs it with 1337 + S (the helper shifts torch.manual_seed; train.py is not edited). PyTorch
# runs with OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS=THREADS; both arms are pinned to the same THREADS CPUs.
# Wall time: two arms × 3 seeds × (2000 steps + evaluations); about 3 minutes a run on a laptop (nanoGPT's README),
# 20-30 minutes a run on a loaded 2-core VM.
#
# Settings (environment):
#   NANOGPT=DIR      a karpathy/nanoGPT checkout (3adf61e): train.py, model.py, configurator.py, config/, data/
#   INPUT=FILE       the text (tinyshakespeare's input.txt)
#   SEEDS="0 1 2"    seeds; each runs ours then nanoGPT
#   THREADS=N        CPUs (and torch threads) for both arms (default: all this process may use)
#   MAX_ITERS=2000   steps (a handful for a smoke run; nanoGPT then evaluates at MAX_ITERS instead of every 250;
#                    below 100 steps the learning rates differ: ours fits the 100-step warm-up into the run)
#   EXTRA="..."      more --config.KEY=VALUE for ours; NANOGPT_EXTRA="--key=value ..." more for nanoGPT
#   PYTHON=python    the interpreter (default: ./.venv's if there is one); it needs torch for nanoGPT
#   DRY_RUN=1        print the commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=${1:-}
if [ -z "$out" ]; then
  echo "usage: NANOGPT=DIR INPUT=input.txt bash launch/shakespeare_char_ab.sh OUT_DIR" >&2
  exit 2
fi
dry=${DRY_RUN:-0}
seeds=${SEEDS:-0 1 2}
max_iters=${MAX_ITERS:-2000}
threads=${THREADS:-$(nproc)}
eval_interval=250
if (( max_iters % eval_interval )); then eval_interval=$max_iters; fi
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  [ -d .venv ] && PYTHON=$repo/.venv/bin/python
fi
if [ "$dry" != 1 ]; then
  for f in train.py model.py configurator.py config/train_shakespeare_char.py data/shakespeare_char/prepare.py; do
    [ -f "${NANOGPT:-}/$f" ] || { echo "set NANOGPT to a karpathy/nanoGPT checkout (no ${NANOGPT:-}/$f)" >&2; exit 2; }
  done
  [ -f "${INPUT:-}" ] || { echo "set INPUT to the text file (tinyshakespeare's input.txt)" >&2; exit 2; }
  if [ -e "$out/results" ]; then echo "$out/results exists: choose a new OUT_DIR" >&2; exit 2; fi
  out=$(mkdir -p "$out" && cd "$out" && pwd)
  INPUT=$(cd "$(dirname "$INPUT")" && pwd)/$(basename "$INPUT")
fi
# the first THREADS CPUs this process may run on, for both arms; PyTorch's threads wait passively
cpus=$("$PYTHON" -c "import os; print(','.join(map(str, sorted(os.sched_getaffinity(0))[:$threads])))")
pin=(taskset -c "$cpus")
torch_env=(OMP_WAIT_POLICY=PASSIVE "OMP_NUM_THREADS=$threads")

nano=$out/nanogpt  # a copy of the checkout's files that train.py reads, and its prepared data
if [ "$dry" = 1 ]; then
  echo "cd $nano/data/shakespeare_char && $PYTHON prepare.py"
else
  mkdir -p "$nano/config" "$nano/data/shakespeare_char" "$out/runs" "$out/logs" "$out/results"
  cp "$NANOGPT"/{train.py,model.py,configurator.py} "$nano/"
  cp "$NANOGPT/config/train_shakespeare_char.py" "$nano/config/"
  cp "$NANOGPT/data/shakespeare_char/prepare.py" "$nano/data/shakespeare_char/"
  cp "$INPUT" "$nano/data/shakespeare_char/input.txt"  # present: prepare.py downloads nothing
  (cd "$nano/data/shakespeare_char" && "$PYTHON" prepare.py) >"$out/logs/prepare.log" 2>&1 \
    || { echo "nanoGPT's prepare.py failed; see $out/logs/prepare.log" >&2; exit 1; }
fi

export INPUT_SHA256 THREADS=$threads EVAL_INTERVAL=$eval_interval
INPUT_SHA256=$( [ "$dry" = 1 ] || sha256sum "$INPUT" | cut -d' ' -f1)
export OURS_COMMIT NANOGPT_COMMIT
OURS_COMMIT=$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo "+dirty")
NANOGPT_COMMIT=$(git -C "${NANOGPT:-.}" rev-parse HEAD 2>/dev/null || echo unknown)

order=0
for seed in $seeds; do
  for arm in ours nanogpt; do
    order=$((order + 1))
    name=${arm}_seed$seed
    rundir=$out/runs/$name
    log=$out/logs/$name.log
    if [ "$arm" = ours ]; then
      # shellcheck disable=SC2086  # EXTRA holds several arguments
      cmd=("${pin[@]}" env JAX_PLATFORMS=cpu "$PYTHON" -m learngene_jax.main
           --config=configs/nanogpt_shakespeare_char.py "--config.data.path=$INPUT" "--config.seed=$seed"
           "--config.max_steps=$max_iters" "--workdir=$rundir" ${EXTRA:-})
      where=$repo
    else
      # shellcheck disable=SC2086
      cmd=("${pin[@]}" env "${torch_env[@]}" "$PYTHON"
           "$repo/launch/shakespeare_char_ab.py" nanogpt-train "$seed" config/train_shakespeare_char.py
           --device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
           --n_head=4 --n_embd=128 "--max_iters=$max_iters" "--lr_decay_iters=$max_iters" --dropout=0.0
           "--out_dir=$rundir" --always_save_checkpoint=True "--eval_interval=$eval_interval" ${NANOGPT_EXTRA:-})
      where=$nano
    fi
    echo "[$order] $name" >&2
    if [ "$dry" = 1 ]; then
      echo "cd $where && $(printf '%q ' "${cmd[@]}")"
      continue
    fi
    start=$(date +%s%N)
    (cd "$where" && "${cmd[@]}") >"$log" 2>&1 || { echo "$name failed; see $log" >&2; tail -5 "$log" >&2; exit 1; }
    export WALL_MS COMMAND NANOGPT_EVAL=""
    WALL_MS=$(( ($(date +%s%N) - start) / 1000000 ))
    COMMAND="cd $where && $(printf '%q ' "${cmd[@]}")"
    if [ "$arm" = nanogpt ]; then
      NANOGPT_EVAL=$(cd "$nano" && "${pin[@]}" env "${torch_env[@]}" "$PYTHON" \
        "$repo/launch/shakespeare_char_ab.py" nanogpt-eval "$rundir" "$seed" data/shakespeare_char/val.bin)
    fi
    env "${torch_env[@]}" NANOGPT_COPY="$nano" "$PYTHON" launch/shakespeare_char_ab.py record "$arm" "$seed" \
      "$rundir" "$log" "$order" "$out/results/$name.json"
  done
done
if [ "$dry" != 1 ]; then
  "$PYTHON" launch/shakespeare_char_ab.py summary "$out/results" "$out"
  echo "bash launch/shakespeare_char_ab.sh $out  # NANOGPT=$NANOGPT INPUT=$INPUT SEEDS='$seeds'" >"$out/commands.txt"
fi
