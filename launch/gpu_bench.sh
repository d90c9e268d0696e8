#!/usr/bin/env bash
# GPU numbers in one go, in under 10 minutes on a GPU host with the stack installed: the Aux-S distillation step
# (TLEG aux ViT-S + LeViT-384 teacher, 224², batch 256, bf16) in JAX against timm with AMP, eager and
# torch.compile; a Llama decoder's training step (width 768, depth 12, 12 heads, MLP 2048, vocabulary 32000,
# batch 8 × 1024 tokens, bf16) against transformers' LlamaForCausalLM with AMP, eager (torch.compile left out to
# keep it to about two minutes); then the input pipeline against timm's DataLoader with 4, 8 and 16 workers on an
# ImageNet-like folder from learngene_jax.data.make_folder. Writes one JSON file with every JSON row, the GPU and
# the versions.
#
#   bash launch/gpu_bench.sh [OUT.json]   # default $OUT/gpu_bench.json when $OUT is set, else runs/gpu_bench.json
#
# Optional:
#   WHEELS=DIR     install missing packages from DIR (pip --no-index --find-links DIR); else from the index
#   PYTHON=python  the interpreter (default: ./.venv's if there is one, else python)
#   BUDGET_S=580   seconds for all steps together; each step also has its own timeout
#   DEVICE=cpu     a tiny smoke run of every step on the CPU (tests/test_bench.py runs it)
#   DRY_RUN=1      print the commands instead of running them
# A step that fails or times out is recorded in the JSON (exit code, last lines of its stderr) and the script
# goes on; the step logs are kept next to the JSON (OUT.logs/).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ -n "${1:-}" ]; then json=$1
elif [ -n "${OUT:-}" ]; then json=$OUT/gpu_bench.json
else json=runs/gpu_bench.json; fi
logs=${json%.json}.logs  # step logs and the image folder
device=${DEVICE:-gpu}
budget=${BUDGET_S:-580}
dry=${DRY_RUN:-0}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  [ -d .venv ] && PYTHON=$repo/.venv/bin/python
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

case "$device" in
  gpu)
    train_step=(--device gpu --stage aux --teacher levit_384 --model vit_s --img 224 --patch 16 --depth 12
                --batch 256 --precision bf16 --compile --steps 10 --warmup 2 --rounds 2)
    lm_step=(--device gpu --width 768 --depth 12 --heads 12 --kv-heads 12 --mlp-dim 2048 --vocab 32000 --batch 8
             --context 1024 --precision bf16 --steps 10 --warmup 2 --rounds 2)
    count=2400; size=500x375; input_workers="4 8 16"; input_batch=64; input_steps=20; input_img=(); input_rounds=2
    train_timeout=300; lm_timeout=180; input_timeout=80 ;;
  cpu)  # seconds-long settings that run every step of the GPU version
    train_step=(--device cpu --stage aux --teacher levit_128s --model vit_ti --img 32 --patch 8 --depth 2
                --batch 4 --classes 10 --steps 2 --warmup 0 --rounds 1)
    lm_step=(--device cpu --width 32 --depth 2 --heads 2 --kv-heads 1 --mlp-dim 48 --vocab 64 --batch 2 --context 16
             --steps 2 --warmup 0 --rounds 1)
    count=64; size=128x96; input_workers="1"; input_batch=16; input_steps=2; input_img=(--img 64); input_rounds=1
    train_timeout=120; lm_timeout=120; input_timeout=60 ;;
  *) echo "error: DEVICE must be gpu or cpu, got '$device'" >&2; exit 2 ;;
esac
folder=$logs/folder

deadline=$((SECONDS + budget))
step() {  # step NAME TIMEOUT_S COMMAND...: run under timeout (cut to the time left), log, record
  local name=$1 limit=$2; shift 2
  local left=$((deadline - SECONDS))
  ((left < limit)) && limit=$left
  if [ "$dry" = 1 ]; then echo "$*"; return 0; fi
  if ((limit < 5)); then
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "$*" >>"$logs/steps.tsv"
    echo "== $name: skipped (the ${budget}s budget is spent)"
    return 0
  fi
  echo "== $name (timeout ${limit}s): $*"
  local start=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.out" 2>"$logs/$name.err"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >>"$logs/steps.tsv"
  if [ "$rc" = 0 ]; then grep -v '^{' "$logs/$name.out" | tail -n 8
  else echo "   failed (exit $rc$([ "$rc" = 124 ] && echo ', timed out')): $(tail -n 1 "$logs/$name.err")"; fi
}

if [ "$dry" != 1 ]; then  # a folder from an earlier run is reused by make_folder when its settings match
  mkdir -p "$logs"
  rm -f "$logs"/steps.tsv "$logs"/*.out "$logs"/*.err
fi

step gpu_info 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
# what is missing of what the benchmark imports (module:package), installed from $WHEELS when set
missing=$("$PYTHON" -c '
import importlib.util
need = {"ml_collections": "ml-collections", "tensorflow_datasets": "tensorflow-datasets",
        "array_record": "array-record", "grain": "grain", "tensorboardX": "tensorboardX", "psutil": "psutil",
        "sklearn": "scikit-learn", "timm": "timm", "transformers": "transformers"}
print(" ".join(p for m, p in need.items() if importlib.util.find_spec(m) is None))' 2>/dev/null)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  step install 180 "$PYTHON" -m pip install -q ${WHEELS:+--no-index --find-links "$WHEELS"} $missing
fi
step jax_info 60 "$PYTHON" -c 'import jax; print(jax.__version__, jax.devices())'
step torch_info 60 "$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())'
step make_folder 120 "$PYTHON" -m learngene_jax.data.make_folder --out "$folder" --count "$count" --size "$size" \
  --jobs "$(nproc)"
step train_step_aux "$train_timeout" "$PYTHON" -m learngene_jax.bench train-step "${train_step[@]}"
step lm_train_step "$lm_timeout" "$PYTHON" -m learngene_jax.bench lm-train-step "${lm_step[@]}"
for workers in $input_workers; do
  step "input_w$workers" "$input_timeout" "$PYTHON" -m learngene_jax.bench input --data "folder:$folder" \
    --workers "$workers" --batch "$input_batch" --warmup "$workers" --steps "$input_steps" \
    --rounds "$input_rounds" "${input_img[@]}"
done
[ "$dry" = 1 ] && exit 0

"$PYTHON" - "$logs" "$json" "$device" "$budget" <<'EOF'
"""Collect the steps' JSON rows, exit codes and the host's GPU and versions into one file."""
import json
import sys
import time
from pathlib import Path

logs, out, device, budget = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
steps, rows, info = [], [], {}
for line in (logs / "steps.tsv").read_text().splitlines():
    name, rc, seconds, command = line.split("\t", 3)
    stdout = (logs / f"{name}.out").read_text() if (logs / f"{name}.out").exists() else ""
    stderr = (logs / f"{name}.err").read_text() if (logs / f"{name}.err").exists() else ""
    found = []
    for text in stdout.splitlines():
        if text.startswith("{"):
            try:
                row = json.loads(text)
            except ValueError:
                continue
            if isinstance(row, dict) and "framework" in row:
                found.append(row)
    step = {"name": name, "command": command, "exit": None if rc == "skipped" else int(rc),
            "seconds": int(seconds), "rows": found}
    if rc == "skipped":
        step["error"] = "skipped: the time budget was spent"
    elif rc != "0":
        step["error"] = ("timed out; " if rc == "124" else "") + "\n".join(stderr.strip().splitlines()[-5:])
    if name.endswith("_info") and rc == "0":
        info[name.removesuffix("_info")] = stdout.strip()
    steps.append(step)
    rows += [{"step": name, **row} for row in found]
result = {"script": "launch/gpu_bench.sh", "device": device, "budget_s": budget,
          "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "info": info, "steps": steps, "rows": rows}
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=1) + "\n")
failed = [s["name"] for s in steps if s["exit"] != 0]
print(f"wrote {out}: {len(rows)} rows from {len(steps)} steps" + (f"; failed: {', '.join(failed)}" if failed else ""))
EOF
