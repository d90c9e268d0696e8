"""The whole learngene story on one small dataset, each stage a run of the one trainer:
teacher → TLEG and SWS aux distillation (genes) → descendants of several depths expanded from each gene
and fine-tuned briefly → scratch models of the same depths for the same and for k× the budget →
WORKDIR/summary.{json,md,png}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import stages
from learngene_jax.stages import Stages, markdown_table

METHOD_LABELS = {"tleg": "TLEG", "sws": "SWS"}


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run every stage (finished stages in `workdir` are reused) and write the summary."""
    d = config.demo
    pipe = Stages(config, workdir, drop=("demo",), warmup_fraction=d.warmup_fraction)
    vit = dict(width=d.width, num_heads=d.heads, patch_size=d.patch_size, scan_layers=d.scan_layers)
    results: dict[str, Any] = {"descendants": []}
    teacher = pipe.stage("teacher", model={"name": "cnn", "widths": tuple(d.teacher_widths)}, epochs=d.teacher_epochs)
    aux_common = {"epochs": d.aux_epochs, "distill": {"type": "soft", "teacher": "", "alpha": d.kd_alpha,
                                                      "temperature": d.kd_temperature,
                                                      "teacher_init": teacher["model_dir"]}}
    auxes = {
        "tleg": pipe.stage("tleg_aux", model={"name": "tleg_aux", "depth": d.tleg_depth, **vit}, **aux_common),
        "sws": pipe.stage("sws_aux", model={"name": "sws_aux", "depth": sum(d.sws_stage_sizes),
                                            "stage_sizes": tuple(d.sws_stage_sizes), **vit}, **aux_common),
    }
    for depth in d.depths:
        row: dict[str, Any] = {"depth": depth}
        for method, aux in auxes.items():
            out = pipe.stage(f"{method}_L{depth}", model={"name": "descendant", "scan_layers": d.scan_layers},
                             gene=aux["gene"], depth=depth, epochs=d.finetune_epochs, eval_at_start=True)
            row[method] = {"top1": out["top1"], "init_top1": out["init"]["top1"], "params": out["params"],
                           "gene_params": aux["gene_params"], "epochs": d.finetune_epochs}
        for factor in (1, d.scratch_factor):
            epochs = d.finetune_epochs * factor
            out = pipe.stage(f"scratch_L{depth}_e{epochs}", model={"name": "vit", **vit, "depth": depth},
                             epochs=epochs)
            row[f"scratch_x{factor}"] = {"top1": out["top1"], "params": out["params"], "epochs": epochs}
        results["descendants"].append(row)
    results["stages"] = pipe.results
    results["total_s"] = pipe.total_s
    write_summary(pipe.workdir, results, d.scratch_factor)
    return results


def summary_table(results: dict[str, Any], factor: int) -> str:
    """The markdown table of the summary."""
    rows = results["descendants"]
    methods = [m for m in METHOD_LABELS if m in rows[0]]
    e = rows[0][methods[0]]["epochs"]
    head = ["depth", "params"] + [f"{METHOD_LABELS[m]} params stored" for m in methods] + [
        f"{METHOD_LABELS[m]} top-1 (init → {e} ep)" for m in methods] + [
        f"scratch top-1 ({e} ep)", f"scratch top-1 ({e * factor} ep)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["depth"]), f"{r['scratch_x1']['params']:,}"]
        cells += [f"{r[m]['gene_params']:,}" for m in methods]
        cells += [f"{r[m]['init_top1']:.3f} → {r[m]['top1']:.3f}" for m in methods]
        cells += [f"{r['scratch_x1']['top1']:.3f}", f"{r[f'scratch_x{factor}']['top1']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scratch_factor(summary: dict[str, Any]) -> int:
    """The largest scratch budget of a demo summary, as a multiple of the fine-tuning epochs (k of scratch_xk)."""
    row = summary["descendants"][0]
    return max(int(k.split("_x")[1]) for k in row if k.startswith("scratch_x"))


def write_summary(workdir: Path, results: dict[str, Any], factor: int) -> None:
    """summary.json, summary.md (table + stage timings) and summary.png (top-1 vs depth); prints the table."""
    runs = results["stages"]
    gene_cost = sum(runs[n]["wall_s"] for n in ("teacher", "tleg_aux", "sws_aux") if n in runs)
    timings = markdown_table(["stage", "wall time (s)", "train time (s)", "top-1"],
                             [[name, s["wall_s"], s["train_time_s"], f"{s['top1']:.3f}"] for name, s in runs.items()])
    stages.write_summary(
        workdir, results, title="Learngene demo (bundled digits: 1,347 train / 450 test)",
        table=summary_table(results, factor),
        sections=[f"One-off cost of the genes (teacher + both aux runs): {gene_cost:.0f} s. "
                  f"Total: {results['total_s']:.0f} s.", "## Stages", timings],
        plot=lambda path: plot_summary(path, results, factor))


def plot_summary(path: Path, results: dict[str, Any], factor: int) -> None:
    """Top-1 against depth for gene-initialised and scratch descendants."""
    rows = results["descendants"]
    lines = []
    for method, label in METHOD_LABELS.items():
        if method in rows[0]:
            e = rows[0][method]["epochs"]
            lines.append(([r[method]["top1"] for r in rows], "o-", f"{label} gene, {e} ep", {}))
            lines.append(([r[method]["init_top1"] for r in rows], "o:", f"{label} gene, no training", {"alpha": 0.6}))
    for key, style in (("scratch_x1", "s--"), (f"scratch_x{factor}", "s-.")):
        lines.append(([r[key]["top1"] for r in rows], style, f"scratch, {rows[0][key]['epochs']} ep", {}))
    stages.plot_against_depth(path, [r["depth"] for r in rows], lines, "top-1 (digits test)", ylim=(0, 1),
                              legend_loc="lower right")
