"""One gene, many descendants: expand the gene at each depth, fine-tune each with the same recipe (the config),
and write one summary (`learngene sweep --gene G --depths 2,4,6,8 --config C --workdir W`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import stages
from learngene_jax.errors import ConfigError, fail
from learngene_jax.stages import Stages, markdown_table, timings_table


def run(config: ml_collections.ConfigDict, workdir: str | Path, *, gene: str, depths: list[int]) -> dict[str, Any]:
    """Fine-tune the descendant of `gene` at every depth (WORKDIR/L{depth}, reused when finished) and write
    WORKDIR/summary.{md,json,png}: params, top-1 at init and after fine-tuning, wall time (s)."""
    if not depths or any(d < 1 for d in depths):
        fail(ConfigError, f"--depths needs depths >= 1, got {depths}")
    pipe = Stages(config, workdir)
    rows = []
    for depth in depths:
        out = pipe.stage(f"L{depth}", gene=gene, depth=depth, eval_at_start=True)
        rows.append({"depth": depth, "params": out["params"], "init_top1": out["init"]["top1"], "top1": out["top1"],
                     "loss": out["loss"], "steps": out["steps"], "epochs": out["epochs"], "wall_s": out["wall_s"]})
    results = {"gene": gene, "rows": rows, "stages": pipe.results, "total_s": pipe.total_s}
    # the epochs actually trained (max_steps may stop a stage early), not the config's
    table = markdown_table(["depth", "params", "top-1 at init", "top-1 fine-tuned", "steps (epochs)", "wall (s)"],
                           [[r["depth"], f"{r['params']:,}", f"{r['init_top1']:.3f}", f"{r['top1']:.3f}",
                             f"{r['steps']} ({r['epochs']:.3g})", r["wall_s"]] for r in rows])
    stages.write_summary(pipe.workdir, results, title=f"Descendants of {gene}", table=table,
                         sections=["## Stages", timings_table(pipe.timings), f"Total: {pipe.total_s:.0f} s."],
                         plot=lambda path: plot(path, rows))
    return results


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    """Top-1 against descendant depth, at init and after fine-tuning."""
    stages.plot_against_depth(path, [r["depth"] for r in rows],
                              [([r["top1"] for r in rows], "o-", "fine-tuned", {}),
                               ([r["init_top1"] for r in rows], "o:", "at init (expanded gene)", {})],
                              "top-1", size=(5, 3.5))
