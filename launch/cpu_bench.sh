#!/usr/bin/env bash
# The CPU benchmarks that docs/benchmarks.md quotes, in one go, into a workdir that becomes a committed record:
# the trainer's step against timm/PyTorch (ViT-Ti at 32² and 224², with and without huge pages; the TLEG aux step
# with a LeViT-128S teacher), LeViT inference against timm, gene expansion against the official rule, the LM
# decoder's step against transformers, and the input pipeline against timm's DataLoader (1 and 2 workers, and a
# long run for memory), and PyTorch with OpenMP's active wait for three of the steps. Each benchmark times every framework in its own processes, A/B/A/B (learngene_jax.bench).
# Run it on a quiet machine: nothing else heavy may run while it times (about 15 minutes on 2 cores).
#
#   bash launch/cpu_bench.sh [OUTDIR]        # default runs/cpu_bench
#   python -m learngene_jax.results record --workdir runs/cpu_bench --name cpu_bench --out docs/records
#
# Optional: PYTHON=python (default ./.venv's), ONLY="name ..." (run these steps only), DRY_RUN=1 (print commands).
# OUTDIR gets summary.json (every step's command, exit code, seconds, report lines and JSON rows), summary.md (the
# reports as people read them), commands.txt and logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${1:-runs/cpu_bench}
logs=$out/logs
folder=$logs/folder
dry=${DRY_RUN:-0}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  [ -d .venv ] && PYTHON=$repo/.venv/bin/python
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
bench=("$PYTHON" -m learngene_jax.bench)

step() {  # step NAME COMMAND...: run, log stdout/stderr, record exit code and seconds
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  if [ "$dry" = 1 ]; then echo "$*"; return 0; fi
  echo "== $name: $*"
  local start=$SECONDS rc
  "$@" >"$logs/$name.out" 2>"$logs/$name.err"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$*" >>"$logs/steps.tsv"
  if [ "$rc" = 0 ]; then grep -v '^{' "$logs/$name.out" | tail -n 8
  else echo "   failed (exit $rc): $(tail -n 1 "$logs/$name.err")"; fi
}

if [ "$dry" != 1 ]; then  # ONLY= adds or redoes steps of an earlier run in the same OUTDIR
  mkdir -p "$logs"
  if [ -z "${ONLY:-}" ]; then rm -f "$logs"/steps.tsv "$logs"/*.out "$logs"/*.err
  elif [ -f "$logs/steps.tsv" ]; then  # forget the earlier rows of the steps being redone
    awk -F'\t' -v only=" $ONLY " 'index(only, " " $1 " ") == 0' "$logs/steps.tsv" >"$logs/steps.tsv.new"
    mv "$logs/steps.tsv.new" "$logs/steps.tsv"
  fi
fi
step train_step_32 "${bench[@]}" train-step --model vit_ti --img 32 --patch 4 --depth 6 --batch 64 --stage descendant
step train_step_32_system_malloc "${bench[@]}" train-step --model vit_ti --img 32 --patch 4 --depth 6 --batch 64 \
  --stage descendant --system-malloc
step train_step_224 "${bench[@]}" train-step --model vit_ti --img 224 --patch 16 --depth 12 --batch 32 \
  --stage descendant
step aux_step_224 "${bench[@]}" train-step --model vit_ti --img 224 --patch 16 --depth 12 --batch 32 --stage aux \
  --teacher levit_128s
step forward_levit_128s "${bench[@]}" forward --model levit_128s --batch 32
step forward_levit_384 "${bench[@]}" forward --model levit_384 --batch 32
step expand_b12 "${bench[@]}" expand --size b --depth 12
step lm_train_step "${bench[@]}" lm-train-step
# PyTorch with OpenMP's default active wait (fast on a quiet host, erratic on a shared one) for comparison
step train_step_32_omp_active env OMP_WAIT_POLICY=ACTIVE "${bench[@]}" train-step --model vit_ti --img 32 --patch 4 \
  --depth 6 --batch 64 --stage descendant
step lm_train_step_omp_active env OMP_WAIT_POLICY=ACTIVE "${bench[@]}" lm-train-step
step forward_levit_128s_omp_active env OMP_WAIT_POLICY=ACTIVE "${bench[@]}" forward --model levit_128s --batch 32
step make_folder "$PYTHON" -m learngene_jax.data.make_folder --out "$folder" --count 1200
step input_w1 "${bench[@]}" input --data "folder:$folder" --workers 1 --batch 64 --steps 54
step input_w2 "${bench[@]}" input --data "folder:$folder" --workers 2 --batch 64 --steps 54
step input_w2_300 "${bench[@]}" input --data "folder:$folder" --workers 2 --batch 64 --steps 300 --rounds 1
[ "$dry" = 1 ] && exit 0

"$PYTHON" - "$out" <<'EOF'
"""Collect the steps into summary.json, summary.md and commands.txt (what a record keeps)."""
import json
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
logs = out / "logs"
steps = {}
for line in (logs / "steps.tsv").read_text().splitlines():
    name, rc, seconds, command = line.split("\t", 3)
    stdout = (logs / f"{name}.out").read_text() if (logs / f"{name}.out").exists() else ""
    stderr = (logs / f"{name}.err").read_text() if (logs / f"{name}.err").exists() else ""
    rows, report = [], []
    for text in stdout.splitlines():
        if text.startswith("{"):
            try:
                rows.append(json.loads(text))
                continue
            except ValueError:
                pass
        report.append(text)
    steps[name] = {"command": command.replace(str(Path.cwd()) + "/", ""), "exit": int(rc), "seconds": int(seconds),
                   "report": report, "rows": rows}
    if rc != "0":
        steps[name]["error"] = "\n".join(stderr.strip().splitlines()[-5:])
summary = {"script": "launch/cpu_bench.sh", "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": steps}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
md = ["# CPU benchmarks (launch/cpu_bench.sh)", ""]
for name, s in steps.items():
    md += [f"## {name}", "", f"`{s['command']}` (exit {s['exit']}, {s['seconds']} s)", "", "```", *s["report"], "```", ""]
(out / "summary.md").write_text("\n".join(md))
(out / "commands.txt").write_text("bash launch/cpu_bench.sh " + str(out) + "\n")
failed = [n for n, s in steps.items() if s["exit"] != 0]
print(f"wrote {out}/summary.json: {len(steps)} steps" + (f"; failed: {', '.join(failed)}" if failed else ""))
EOF
