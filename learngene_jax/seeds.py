"""python -m learngene_jax.seeds --seeds 0,1,2 --workdir runs/seeds [--smoke]

The offline demo and the baselines (configs/demo.py, configs/baselines.py) once per seed, each seed in its own
workdir WORKDIR/seed{N} (finished stages are reused, so a rerun resumes), then every top-1 of the demo's table
and of the baselines that the demo does not run as mean ± sample std over the seeds, and the demo's claim — a
gene descendant after its fine-tuning epoch beats scratch after k× the epochs at every depth — checked per seed
→ WORKDIR/seeds.{json,md} and WORKDIR/commands.txt. `--smoke` runs the seconds-long configs (tests).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.errors import UserError, fail, run

CONFIGS = ("configs/demo.py", "configs/baselines.py")  # run in this order: the baselines reuse the demo's stages
# Baselines whose runs the demo does not have (its scratch, TLEG and SWS rows are the demo's own stages).
EXTRA_BASELINES = ("weight selection", "pre-train → fine-tune")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' → [0, 1, 2]; UserError unless ≥ 2 distinct non-negative integers (a sample std needs n ≥ 2)."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    if any(re.fullmatch(r"-?[0-9]+", p) is None for p in parts):  # not errors.int_list: it skips empty items
        fail(UserError, f"--seeds must be comma-separated integers like 0,1,2, got {text!r}")
    seeds = [int(p) for p in parts]
    if len(seeds) < 2:
        fail(UserError, f"--seeds needs at least 2 seeds for a sample std, got {text!r} (e.g. --seeds 0,1,2)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        fail(UserError, f"--seeds lists {', '.join(map(str, repeated))} more than once: each seed runs once")
    if min(seeds) < 0:
        fail(UserError, f"--seeds must be non-negative integers, got {text!r}")
    return seeds


def seed_workdir(workdir: Path, seed: int) -> Path:
    """Where one seed's stages, summary.json and comparison.json go."""
    return workdir / f"seed{seed}"


def run_seeds(seeds: list[int], workdir: Path, smoke: bool = False) -> float:
    """Run the demo then the baselines for each seed in `seed_workdir` (in this process, as `main` would with
    --config.seed=N); returns the wall time in seconds."""
    from absl import logging

    from learngene_jax.config_lib import load_config, with_changes
    from learngene_jax.main import enable_compilation_cache, resolve_task

    enable_compilation_cache()
    configs = [load_config(path + (":smoke=True" if smoke else "")) for path in CONFIGS]
    tasks = [resolve_task(c.task) for c in configs]
    logging.set_verbosity(logging.ERROR)  # as main does by default: after the tasks' imports, which reset it
    start = time.perf_counter()
    for seed in seeds:
        for config, task in zip(configs, tasks, strict=True):
            print(f"=== seed {seed}: {config.task} → {seed_workdir(workdir, seed)}", file=sys.stderr, flush=True)
            task(with_changes(config, seed=seed), seed_workdir(workdir, seed))
    return round(time.perf_counter() - start, 1)


def seed_quantities(summary: dict[str, Any], comparison: dict[str, Any] | None) -> dict[int, dict[str, float]]:
    """One seed's top-1s: depth → {quantity: top-1}, from its summary.json (TLEG/SWS init and after fine-tuning,
    scratch for each budget) and comparison.json (`EXTRA_BASELINES`, where present)."""
    from learngene_jax.experiments.demo import METHOD_LABELS

    out: dict[int, dict[str, float]] = {}
    for row in summary["descendants"]:
        values = {}
        for method, label in METHOD_LABELS.items():
            if method in row:
                values[f"{label} init"] = row[method]["init_top1"]
                values[f"{label} {row[method]['epochs']} ep"] = row[method]["top1"]
        for factor in sorted(int(k.split("_x")[1]) for k in row if k.startswith("scratch_x")):
            scratch = row[f"scratch_x{factor}"]
            values[f"scratch {scratch['epochs']} ep"] = scratch["top1"]
        out[row["depth"]] = values
    for r in (comparison or {}).get("rows", []):
        if r["method"] in EXTRA_BASELINES:
            out.setdefault(r["depth"], {})[f"{r['method']} {r['epochs']} ep"] = r["top1"]
    return out


def aggregate(per_seed: dict[int, dict[int, dict[str, float]]]) -> list[dict[str, Any]]:
    """Rows {depth, quantity, values (one per seed, in `per_seed` order), mean, std (sample, n − 1)} from
    `seed_quantities` of each seed; every seed must have the same depths and quantities."""
    seeds = list(per_seed)
    if len(seeds) < 2:
        fail(UserError, f"a sample std needs at least 2 seeds, got {len(seeds)}")
    first = per_seed[seeds[0]]
    rows = []
    for depth in sorted(first):
        for quantity in first[depth]:
            missing = [s for s in seeds if quantity not in per_seed[s].get(depth, {})]
            if missing:
                fail(UserError, f"seed {missing[0]} has no {quantity!r} at depth {depth} although seed {seeds[0]} "
                                f"has: were the seeds run with different configs (--smoke)? rerun them alike")
            values = np.array([per_seed[s][depth][quantity] for s in seeds], np.float64)
            rows.append({"depth": depth, "quantity": quantity, "values": values.tolist(),
                         "mean": float(values.mean()), "std": float(values.std(ddof=1))})
    return rows


def check_claim(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The demo's claim per seed and method: {statement, methods: {label: {holds_in, seeds, per_seed: {seed:
    {holds, fails_at_depths}}}}}; "beats" is a strictly higher top-1 than scratch with the largest budget."""
    from learngene_jax.experiments.demo import METHOD_LABELS, scratch_factor

    first = next(iter(summaries.values()))
    row = first["descendants"][0]
    factor = scratch_factor(first)
    methods = [m for m in METHOD_LABELS if m in row]
    epochs, scratch_epochs = row[methods[0]]["epochs"], row[f"scratch_x{factor}"]["epochs"]
    out: dict[str, Any] = {"statement": f"a gene descendant after {epochs} epoch{'s' * (epochs != 1)} beats scratch "
                                        f"after {scratch_epochs} epochs at every depth", "methods": {}}
    for method in methods:
        per_seed = {}
        for seed, summary in summaries.items():
            longest = f"scratch_x{scratch_factor(summary)}"
            fails = [r["depth"] for r in summary["descendants"] if not r[method]["top1"] > r[longest]["top1"]]
            per_seed[str(seed)] = {"holds": not fails, "fails_at_depths": fails}
        out["methods"][METHOD_LABELS[method]] = {"holds_in": sum(p["holds"] for p in per_seed.values()),
                                                 "seeds": len(per_seed), "per_seed": per_seed}
    return out


def collect(seeds: list[int], workdir: Path) -> dict[str, Any]:
    """seeds.json's content (without timings) from each seed's summary.json and comparison.json."""
    summaries, quantities, stage_s = {}, {}, {}
    for seed in seeds:
        directory = seed_workdir(workdir, seed)
        if not (directory / "summary.json").exists():
            fail(UserError, f"no summary.json in {directory}: the demo has not finished for seed {seed}")
        summary = json.loads((directory / "summary.json").read_text())
        comparison_file = directory / "comparison.json"
        comparison = json.loads(comparison_file.read_text()) if comparison_file.exists() else None
        summaries[seed] = summary
        quantities[seed] = seed_quantities(summary, comparison)
        stages = {**summary["stages"], **(comparison or {}).get("stages", {})}
        stage_s[str(seed)] = round(sum(s["wall_s"] for s in stages.values()), 1)
    return {"seeds": seeds, "workdirs": {str(s): seed_workdir(workdir, s).name for s in seeds},
            "rows": aggregate(quantities), "claim": check_claim(summaries), "stage_s": stage_s}


def seeds_table(data: dict[str, Any]) -> str:
    """Markdown: depth, quantity, mean ± std, then one column per seed."""
    head = ["depth", "top-1", f"mean ± std (n = {len(data['seeds'])})"] + [f"seed {s}" for s in data["seeds"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in data["rows"]:
        cells = [str(r["depth"]), r["quantity"], f"{r['mean']:.3f} ± {r['std']:.3f}"]
        lines.append("| " + " | ".join(cells + [f"{v:.3f}" for v in r["values"]]) + " |")
    return "\n".join(lines)


def claim_lines(data: dict[str, Any]) -> str:
    """Markdown: the claim, then per method the seeds it holds in and where it fails."""
    claim = data["claim"]
    lines = [f"Claim: {claim['statement']}."]
    for label, m in claim["methods"].items():
        fails = [f"seed {s} at depth {', '.join(map(str, p['fails_at_depths']))}"
                 for s, p in m["per_seed"].items() if not p["holds"]]
        lines.append(f"- {label}: holds in {m['holds_in']}/{m['seeds']} seeds"
                     + (f" (fails in {'; '.join(fails)})" if fails else ""))
    return "\n".join(lines)


def time_line(data: dict[str, Any]) -> str:
    """Markdown: wall time of the command that wrote the file and the stages' own time per seed."""
    per_seed = ", ".join(f"seed {s}: {t:.0f} s" for s, t in data["stage_s"].items())
    return (f"Total wall time: {data['wall_s']:.0f} s (the command that wrote this; stages reused from an earlier "
            f"run take no time); stages, as first run: {per_seed}.")


def write(workdir: Path, data: dict[str, Any]) -> None:
    """WORKDIR/seeds.json and seeds.md (the summary writer of stages.py); prints the table."""
    from learngene_jax import stages

    title = f"Learngene demo and baselines over {len(data['seeds'])} seeds (bundled digits)"
    stages.write_summary(workdir, data, name="seeds", title=title, table=seeds_table(data),
                         sections=[claim_lines(data), time_line(data)])


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.seeds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", required=True, help="comma-separated distinct seeds, at least 2 (e.g. 0,1,2)")
    p.add_argument("--workdir", required=True, help="each seed runs in WORKDIR/seed{N} (resumes if present)")
    p.add_argument("--smoke", action="store_true", help="the seconds-long configs (:smoke=True), for tests")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    workdir = Path(args.workdir).expanduser().absolute()
    from learngene_jax import distributed  # imports jax: after the arguments are checked

    distributed.initialize()
    if distributed.is_main_process():
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "commands.txt", "a") as f:
            f.write(" ".join(["python -m learngene_jax.seeds", *(sys.argv[1:] if argv is None else argv)]) + "\n")
    wall = run_seeds(seeds, workdir, args.smoke)
    if distributed.is_main_process():
        write(workdir, {**collect(seeds, workdir), "wall_s": wall})


if __name__ == "__main__":
    run(main)
