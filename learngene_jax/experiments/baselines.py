"""Baselines in one harness, as the papers' tables: for each descendant depth, scratch, pre-train then
fine-tune (the ancestor's own depth only), weight selection from the ancestor, TLEG and SWS — with the
params stored for initialisation and the training cost (epochs × forward GMACs per image).

Stage names match the demo's, so running it in the demo's workdir reuses the teacher, genes and runs there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import stages
from learngene_jax.models.cost import vit_macs
from learngene_jax.models.io import load_model
from learngene_jax.stages import Stages


def gmacs(model_dir: str) -> float:
    """Forward GMACs per image of a ViT-family model directory."""
    return vit_macs(load_model(model_dir)[0]) / 1e9


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or reuse) every stage and write comparison.{json,md}."""
    d, b = config.demo, config.baselines
    pipe = Stages(config, workdir, drop=("demo", "baselines"), warmup_fraction=d.warmup_fraction)
    vit = dict(width=d.width, num_heads=d.heads, patch_size=d.patch_size, scan_layers=d.scan_layers)
    teacher = pipe.stage("teacher", model={"name": "cnn", "widths": tuple(d.teacher_widths)}, epochs=d.teacher_epochs)
    kd = {"epochs": d.aux_epochs, "distill": {"type": "soft", "teacher": "", "alpha": d.kd_alpha,
                                              "temperature": d.kd_temperature, "teacher_init": teacher["model_dir"]}}
    auxes = {
        "TLEG": pipe.stage("tleg_aux", model={"name": "tleg_aux", "depth": d.tleg_depth, **vit}, **kd),
        "SWS": pipe.stage("sws_aux", model={"name": "sws_aux", "depth": sum(d.sws_stage_sizes),
                                            "stage_sizes": tuple(d.sws_stage_sizes), **vit}, **kd),
    }
    ancestor = pipe.stage(f"ancestor_L{b.ancestor_depth}", model={"name": "vit", **vit, "depth": b.ancestor_depth},
                          epochs=b.ancestor_epochs)
    pre_cost = {"ancestor": b.ancestor_epochs * gmacs(ancestor["model_dir"]),
                **{m: d.aux_epochs * gmacs(a["model_dir"]) for m, a in auxes.items()}}
    e = d.finetune_epochs
    rows = []
    for depth in d.depths:
        runs = {"scratch": (pipe.stage(f"scratch_L{depth}_e{e}", model={"name": "vit", **vit, "depth": depth},
                                       epochs=e), 0, 0.0),
                "weight selection": (pipe.stage(f"wsel_L{depth}", model={"name": "vit", **vit, "depth": depth},
                                                init=ancestor["model_dir"], init_method="weight_selection", epochs=e),
                                     ancestor["params"], pre_cost["ancestor"])}
        if depth == b.ancestor_depth:
            runs["pre-train → fine-tune"] = (pipe.stage(f"prefin_L{depth}", model={"name": "vit", **vit},
                                                        init=ancestor["model_dir"], epochs=e),
                                             ancestor["params"], pre_cost["ancestor"])
        for method, aux in auxes.items():
            runs[method] = (pipe.stage(f"{method.lower()}_L{depth}", model={"name": "descendant",
                                                                            "scan_layers": d.scan_layers},
                                       gene=aux["gene"], depth=depth, epochs=e, eval_at_start=True),
                            aux["gene_params"], pre_cost[method])
        for method, (out, stored, pre) in runs.items():
            rows.append({"depth": depth, "method": method, "params": out["params"], "stored": stored,
                         "pretrain_cost": pre, "finetune_cost": e * gmacs(out["model_dir"]),
                         "epochs": e, "top1": out["top1"], "stage": out["name"]})
    results = {"rows": rows, "stages": pipe.results,
               "total_s": pipe.total_s}
    stages.write_summary(
        pipe.workdir, results, name="comparison", title="Baselines on the bundled digits", table=comparison_table(rows),
        sections=["Cost = epochs × forward GMACs per image (training is ~3× that per image seen); pre-training cost is "
                  f"paid once per ancestor or gene. Fine-tuning: {e} epoch(s) each."])
    return results


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: depth, method, params, params stored for init, pre-training and fine-tuning cost, top-1."""
    lines = ["| depth | method | params | params stored for init | pre-train cost | fine-tune cost | top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['depth']} | {r['method']} | {r['params']:,} | {r['stored']:,} | {r['pretrain_cost']:.3g}"
                     f" | {r['finetune_cost']:.3g} | {r['top1']:.3f} |")
    return "\n".join(lines)
