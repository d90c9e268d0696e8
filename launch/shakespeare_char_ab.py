"""The pieces of launch/shakespeare_char_ab.sh that are Python: running nanoGPT's train.py with another seed, reading
its checkpoint for the validation loss, timing both trainers from their logs, and writing one JSON per run.

Each subcommand runs in its own process; the nanoGPT ones import torch and nanoGPT's model.py only (never JAX), the
ours one reads files only. Subcommands:

    nanogpt-train SEED ARGS...   in a nanoGPT directory: its train.py with torch.manual_seed(1337 + SEED)
    nanogpt-eval OUT_DIR SEED    ckpt.pt → whole-validation-split loss and a 200-batch estimate_loss (JSON on stdout)
    record ARM SEED RUN_DIR LOG ORDER JSON   one run's JSON (losses, tokens/s, wall time, command, host)
    summary RESULTS_DIR          mean ± std per arm over the seeds, and the ratios (JSON on stdout)

Definitions (the same for both arms):
- whole-split loss: mean next-character cross-entropy (nats) over every character of the validation split after its
  first, in non-overlapping windows of 64 inputs starting at 0, 64, 128, ...; the last window is partial (the
  remaining (n − 1) mod 64 targets, 51 for tinyshakespeare) and is scored on its real targets only — ours computes it
  in the trainer (final.json eval_loss, data/text.py whole_split_starts), nanoGPT's here from ckpt.pt;
- estimate_200: nanoGPT's estimate_loss on the validation split (train.py:216-228) with eval_iters=200: 200 batches of
  12 windows at starts torch.randint(len(val) − 64, (12,)), from torch.manual_seed(1337 + SEED), mean of the batch
  means; estimate_20: the 20-batch number its own run printed at the last evaluation (`step 2000: ... val loss X`);
- tokens/s: 12 × 64 tokens per step over wall clock between log lines, which both trainers write after a sync:
  nanoGPT every step (`iter N: ... time Tms`), leaving out step 0 and every step whose interval holds an evaluation
  (it evaluates before steps 0, 250, ..., and its dt includes that); ours every 50 steps (metrics.jsonl `time`; the
  config's log_every_steps), from the first row on, so the first interval (compilation) and the final evaluation,
  which comes after the last row, are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

BATCH, CONTEXT, SEED_BASE = 12, 64, 1337  # the recipe's batch and block size; nanoGPT's torch.manual_seed(1337)
ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
EVAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def nanogpt_train(seed: int, args: list[str]) -> None:
    """nanoGPT's train.py, unmodified, with its hard-coded torch.manual_seed(1337 + seed_offset) shifted by `seed`
    (train.py:106; seed_offset is not a config key) and torch's intra-op threads set to OMP_NUM_THREADS."""
    import runpy

    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    manual_seed = torch.manual_seed
    torch.manual_seed = lambda s: manual_seed(s + seed)
    sys.path.insert(0, os.getcwd())  # train.py imports model.py from its own directory
    sys.argv = ["train.py", *args]
    runpy.run_path("train.py", run_name="__main__")


def nanogpt_eval(out_dir: str, seed: int, val_bin: str) -> dict[str, float]:
    """ckpt.pt's model on the validation split: the whole-split loss and the 200-batch estimate (module docstring)."""
    import numpy as np
    import torch

    sys.path.insert(0, os.getcwd())
    from model import GPT, GPTConfig  # nanoGPT's model.py (run from its directory)

    checkpoint = torch.load(Path(out_dir) / "ckpt.pt", map_location="cpu")
    with contextlib.redirect_stdout(sys.stderr):  # GPT() prints its size; stdout carries the JSON
        model = GPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
    model.eval()
    val = np.fromfile(val_bin, dtype=np.uint16).astype(np.int64)
    block = checkpoint["model_args"]["block_size"]
    total, count = 0.0, 0
    starts = list(range(0, len(val) - 1, block))
    with torch.no_grad():
        for chunk in range(0, len(starts), 128):
            group = starts[chunk:chunk + 128]
            full = [s for s in group if s + block + 1 <= len(val)]
            parts = [full] + [[s] for s in group if s + block + 1 > len(val)]  # the partial last window alone
            for part in filter(None, parts):
                length = min(block, len(val) - 1 - part[0])
                x = torch.stack([torch.from_numpy(val[s:s + length]) for s in part])
                y = torch.stack([torch.from_numpy(val[s + 1:s + 1 + length]) for s in part])
                logits, _ = model(x, y)
                ce = torch.nn.functional.cross_entropy(logits.double().reshape(-1, logits.size(-1)), y.reshape(-1),
                                                       reduction="sum")
                total, count = total + float(ce), count + y.numel()
        torch.manual_seed(SEED_BASE + seed)
        batch = checkpoint["config"]["batch_size"]
        losses = []
        for _ in range(200):  # estimate_loss (train.py:216-228) on 'val', get_batch's sampling (train.py:123)
            ix = torch.randint(len(val) - block, (batch,))
            x = torch.stack([torch.from_numpy(val[i:i + block]) for i in ix])
            y = torch.stack([torch.from_numpy(val[i + 1:i + 1 + block]) for i in ix])
            losses.append(model(x, y)[1].item())
    return {"whole_val_loss": total / count, "whole_val_targets": count, "estimate_200": sum(losses) / len(losses),
            "checkpoint_iter": int(checkpoint["iter_num"])}


def nanogpt_timing(log: str, eval_interval: int) -> dict[str, object]:
    """tokens/s of a nanoGPT log (`iter N: ... time Tms` lines), its steps 0 and multiples of eval_interval left out;
    and its last printed evaluation."""
    times, evals = [], []
    for line in log.splitlines():
        if m := ITER_LINE.match(line):
            if int(m.group(1)) % eval_interval:  # step 0 (the first) and every step with an evaluation excluded
                times.append(float(m.group(3)) / 1000)
        elif m := EVAL_LINE.match(line):
            evals.append((int(m.group(1)), float(m.group(3))))
    out: dict[str, object] = {"steps_timed": len(times)}
    if times:
        out.update(tokens_per_s=len(times) * BATCH * CONTEXT / sum(times),
                   median_step_ms=1000 * statistics.median(times))
    if evals:
        out.update(estimate_20_step=evals[-1][0], estimate_20=evals[-1][1])
    return out


def ours_timing(workdir: Path) -> dict[str, object]:
    """tokens/s of our run from metrics.jsonl's per-step train rows (wall clock `time`), the first step excluded;
    the final evaluation comes after the last row."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = sorted((r["step"], r["time"]) for r in rows if r.get("split") == "train")
    timed = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(train, train[1:], strict=False)]
    out: dict[str, object] = {"steps_timed": sum(s for s, _ in timed)}
    if timed:
        seconds = sum(t for _, t in timed)
        out.update(tokens_per_s=out["steps_timed"] * BATCH * CONTEXT / seconds,
                   median_step_ms=1000 * statistics.median(t / s for s, t in timed))
    return out


def host() -> dict[str, object]:
    """What the numbers depend on: CPU model, cores, load, Python."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"hostname": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "loadavg": os.getloadavg(), "python": platform.python_version()}


def record(arm: str, seed: int, run_dir: Path, log_path: Path, order: int, out: Path) -> None:
    """One run's JSON: its losses, throughput and what produced it (module docstring). The shell script passes the
    rest in the environment: THREADS, WALL_MS, COMMAND, INPUT_SHA256, OURS_COMMIT / NANOGPT_COMMIT, and for nanoGPT
    NANOGPT_EVAL (nanogpt-eval's JSON), EVAL_INTERVAL, NANOGPT_COPY (the directory it ran in) and its OpenMP
    settings."""
    log = log_path.read_text(errors="replace")
    row: dict[str, object] = {"arm": arm, "seed": seed, "order": order, "threads": int(os.environ["THREADS"]),
                              "wall_s": int(os.environ["WALL_MS"]) / 1000, "command": os.environ["COMMAND"],
                              "input_sha256": os.environ.get("INPUT_SHA256"), "host": host(),
                              "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if arm == "ours":
        final = json.loads((run_dir / "final.json").read_text())
        row.update(eval_loss=final["eval_loss"], steps=final["steps"], **ours_timing(run_dir))
        row["learngene_jax_commit"] = os.environ.get("OURS_COMMIT")
    else:
        row.update(json.loads(os.environ["NANOGPT_EVAL"]), **nanogpt_timing(log, int(os.environ["EVAL_INTERVAL"])))
        row["eval_loss"] = row["whole_val_loss"]
        row["nanogpt_commit"] = os.environ.get("NANOGPT_COMMIT")
        copy = Path(os.environ["NANOGPT_COPY"])  # the files that ran, whatever the checkout's git state
        row["nanogpt_sha256"] = {name: hashlib.sha256((copy / name).read_bytes()).hexdigest() for name in
                                 ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")}
        import torch

        row["torch"] = torch.__version__
        row["torch_env"] = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"{arm} seed {seed}: eval_loss {row['eval_loss']:.4f}, {row.get('tokens_per_s', float('nan')):,.0f} "
          f"tokens/s -> {out}", file=sys.stderr)


def summary(results: Path) -> dict[str, object]:
    """Mean and sample std per arm over the recorded runs; ours − nanoGPT's whole-split loss, tokens/s ratio."""
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values)}
    out: dict[str, object] = {}
    for arm in ("ours", "nanogpt"):
        mine = [r for r in rows if r["arm"] == arm]
        keys = ["eval_loss", "tokens_per_s"] + (["estimate_200", "estimate_20"] if arm == "nanogpt" else [])
        out[arm] = {k: stats([r[k] for r in mine if k in r]) for k in keys if any(k in r for r in mine)}
    if out.get("ours") and out.get("nanogpt") and "eval_loss" in out["ours"] and "eval_loss" in out["nanogpt"]:
        out["eval_loss_difference"] = out["ours"]["eval_loss"]["mean"] - out["nanogpt"]["eval_loss"]["mean"]
        if "tokens_per_s" in out["ours"] and "tokens_per_s" in out["nanogpt"]:
            out["tokens_per_s_ratio"] = out["ours"]["tokens_per_s"]["mean"] / out["nanogpt"]["tokens_per_s"]["mean"]
    out["runs"] = rows  # every run as recorded: what a committed record of this directory keeps
    return out


def summary_markdown(result: dict[str, object]) -> str:
    """The runs and the means as a markdown table (OUT/summary.md)."""
    runs = sorted(result["runs"], key=lambda r: r["order"])
    lines = ["# nanoGPT Shakespeare-char: ours against nanoGPT's train.py", "",
             "| order | arm | seed | whole-val loss (nats/char) | nanoGPT 200-batch estimate | tokens/s | steps | "
             "wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        estimate = f"{r['estimate_200']:.4f}" if "estimate_200" in r else "–"
        lines.append(f"| {r['order']} | {r['arm']} | {r['seed']} | {r['eval_loss']:.4f} | {estimate} | "
                     f"{r.get('tokens_per_s', float('nan')):.0f} | {r.get('steps', '–')} | {r['wall_s']:.1f} |")
    lines += ["", "| arm | whole-val loss, mean ± std | tokens/s, mean ± std |", "|---|---|---|"]
    for arm in ("ours", "nanogpt"):
        stats = result.get(arm) or {}
        if "eval_loss" in stats and "tokens_per_s" in stats:
            loss, rate = stats["eval_loss"], stats["tokens_per_s"]
            lines.append(f"| {arm} | {loss['mean']:.4f} ± {loss['std'] or 0:.4f} | "
                         f"{rate['mean']:.0f} ± {rate['std'] or 0:.0f} |")
    if "eval_loss_difference" in result:
        lines += ["", f"ours − nanoGPT whole-val loss: {result['eval_loss_difference']:+.4f}; ours/nanoGPT tokens/s: "
                      f"{result.get('tokens_per_s_ratio', float('nan')):.2f}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    command, rest = argv[0], argv[1:]
    if command == "nanogpt-train":
        nanogpt_train(int(rest[0]), rest[1:])
    elif command == "nanogpt-eval":
        print(json.dumps(nanogpt_eval(rest[0], int(rest[1]), rest[2])))
    elif command == "record":
        record(rest[0], int(rest[1]), Path(rest[2]), Path(rest[3]), int(rest[4]), Path(rest[5]))
    elif command == "summary":  # summary RESULTS_DIR OUT_DIR: OUT_DIR/summary.json and summary.md
        result = summary(Path(rest[0]))
        (Path(rest[1]) / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
        (Path(rest[1]) / "summary.md").write_text(summary_markdown(result))
        print(summary_markdown(result))
    elif command == "host":
        print(json.dumps(host()))
    else:
        sys.exit(f"unknown subcommand {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
