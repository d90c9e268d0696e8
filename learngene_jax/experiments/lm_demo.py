"""The language-model learngene story on an offline corpus, each stage a run of the one trainer: teacher decoder →
TLEG and SWS aux decoders distilled from it → descendants of several depths from each gene, fine-tuned briefly →
the teacher's first D layers (a layer gene) and scratch decoders of the same depths for the same and k× the steps →
Heur / Auto Learngene with LoRA on the teacher against plain LoRA (methods/heur/lm_stream.py, when installed) →
WORKDIR/summary.{md,json,png} (+ lora_stream.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import logs, stages
from learngene_jax.config_lib import with_changes
from learngene_jax.data.text import load_corpus, text_source
from learngene_jax.registry import TASKS
from learngene_jax.stages import Stages, markdown_table, timings_table

METHODS = {"tleg": "TLEG", "sws": "SWS"}


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run every stage (finished stages in `workdir` are reused) and write the summary."""
    d = config.lm_demo
    pipe = Stages(config, workdir, drop=("lm_demo",))
    model = config.model.to_dict()
    train = text_source(config.data, config.data.train_split, train=True)
    steps_per_epoch = max(1, len(train) // config.batch_size)

    def budget(steps: int) -> dict[str, Any]:
        """A stage of `steps` optimizer steps (within one epoch), warm-up over warmup_fraction of them."""
        return {"max_steps": steps, "optim.warmup_epochs": d.warmup_fraction * steps / steps_per_epoch}

    teacher = pipe.stage("teacher", model={**model, "depth": d.teacher_depth}, **budget(d.teacher_steps))
    kd = {"distill": {"type": "soft", "teacher": "", "alpha": d.kd_alpha, "temperature": d.kd_temperature,
                      "teacher_init": teacher["model_dir"]}}
    arch = {k: v for k, v in model.items() if k != "name"}
    auxes = {
        "tleg": pipe.stage("tleg_aux", model={**arch, "name": "tleg_llama", "depth": d.tleg_depth}, **kd,
                           **budget(d.aux_steps), **{"optim.lr": d.get("tleg_aux_lr", config.optim.lr)}),
        "sws": pipe.stage("sws_aux", model={**arch, "name": "sws_llama", "depth": sum(d.sws_stage_sizes),
                                            "stage_sizes": tuple(d.sws_stage_sizes)}, **kd,
                          **budget(d.aux_steps)),
    }
    rows = []
    for depth in d.depths:
        row: dict[str, Any] = {"depth": depth}
        for method, aux in auxes.items():
            out = pipe.stage(f"{method}_L{depth}", model={"name": "descendant"}, gene=aux["gene"], depth=depth,
                             eval_at_start=True, **{"optim.lr": d.finetune_lr}, **budget(d.finetune_steps))
            row[method] = {"loss": out["loss"], "init_loss": out["init"]["loss"], "params": out["params"],
                           "gene_params": aux["gene_params"], "steps": out["steps"]}
        if d.get("inherit", False) and depth < d.teacher_depth:  # the layer gene: the teacher's first D layers
            out = pipe.stage(f"inherit_L{depth}", init=teacher["model_dir"], init_method="layer_gene", depth=depth,
                             **{"layer_gene.layers": tuple(range(depth)), "layer_gene.place": "bottom",
                                "optim.lr": d.finetune_lr}, eval_at_start=True, **budget(d.finetune_steps))
            row["inherit"] = {"loss": out["loss"], "init_loss": out["init"]["loss"], "params": out["params"],
                              "steps": out["steps"]}
        for factor in (1, d.scratch_factor):
            steps = d.finetune_steps * factor
            out = pipe.stage(f"scratch_L{depth}_x{factor}", model={**model, "depth": depth}, **budget(steps))
            row[f"scratch_x{factor}"] = {"loss": out["loss"], "params": out["params"], "steps": out["steps"]}
        rows.append(row)
    stream = None
    if d.get("lora_stream", False):
        if "lm_lora_stream" in TASKS:  # Heur / Auto with LoRA on the teacher (methods/heur/lm_stream.py)
            stream = TASKS.get("lm_lora_stream")(with_changes(config, init=teacher["model_dir"]), workdir, pipe=pipe)
        else:
            logs.info("lm_demo: the heur method package is not installed; skipping the LoRA stream")
    corpus = load_corpus(config.data.name, config.data.get("path", "")).describe()
    results = {"corpus": corpus, "rows": rows, "stages": pipe.results, "total_s": pipe.total_s,
               "teacher_loss": teacher["loss"], "aux_loss": {m: a["loss"] for m, a in auxes.items()},
               "lora_stream": stream}
    write_summary(pipe.workdir, results, d.scratch_factor)
    return results


def summary_table(results: dict[str, Any], factor: int) -> str:
    """Validation loss (nats per byte) of every descendant and scratch run."""
    rows = results["rows"]
    methods = [m for m in METHODS if m in rows[0]]
    f = rows[0]
    inherit = any("inherit" in r for r in rows)
    head = ["depth", "params", *(f"{METHODS[m]} loss (init → {f[m]['steps']} steps)" for m in methods),
            *(["teacher's first layers (init → same steps)"] if inherit else []),
            f"scratch ({f['scratch_x1']['steps']} steps)", f"scratch ({f[f'scratch_x{factor}']['steps']} steps)"]
    body = [[r["depth"], f"{r[methods[0]]['params']:,}",
             *(f"{r[m]['init_loss']:.3f} → {r[m]['loss']:.3f}" for m in methods),
             *([f"{r['inherit']['init_loss']:.3f} → {r['inherit']['loss']:.3f}" if "inherit" in r else
                "— (the teacher)"] if inherit else []),
             f"{r['scratch_x1']['loss']:.3f}", f"{r[f'scratch_x{factor}']['loss']:.3f}"] for r in rows]
    return markdown_table(head, body)


def write_summary(workdir: Path, results: dict[str, Any], factor: int) -> None:
    """summary.{md,json,png}: the table, the corpus (digest, sizes), the genes, the stage times."""
    c = results["corpus"]
    stats = (f"Corpus {c['corpus']} (sha256 {c['sha256'][:16]}…): {c['train']['bytes']:,} train bytes in "
             f"{c['train']['documents']} documents, {c['validation']['bytes']:,} held-out bytes in "
             f"{c['validation']['documents']}. Loss = nats per byte on the held-out documents (perplexity = e^loss, "
             f"bits per byte = loss / ln 2). Teacher {results['teacher_loss']:.3f}; aux "
             + ", ".join(f"{METHODS[m]} {v:.3f}" for m, v in results["aux_loss"].items()) + ".")
    stream = []
    if results.get("lora_stream"):
        from learngene_jax.methods.heur import lm_stream  # present: the stream ran

        lm_stream.plot_file(workdir / "lora_stream.png", results["lora_stream"])
        stream = ["## Heur / Auto Learngene with LoRA against plain LoRA", lm_stream.summary_table(
            results["lora_stream"]), lm_stream.description(results["lora_stream"]),
            "![loss against epochs](lora_stream.png)"]
    stages.write_summary(workdir, results, title="Language-model learngene demo (byte tokens)",
                         table=summary_table(results, factor),
                         sections=[stats, *stream, "## Stages", timings_table({k: v["wall_s"] for k, v in
                                                                      results["stages"].items()}),
                                   f"Total: {results['total_s']:.0f} s."],
                         plot=lambda path: plot(path, results, factor))


def plot(path: Path, results: dict[str, Any], factor: int) -> None:
    """Validation loss against depth for gene descendants and scratch."""
    rows = results["rows"]
    lines = [([r[m]["loss"] for r in rows], "o-", f"{label} gene, fine-tuned", {})
             for m, label in METHODS.items() if m in rows[0]]
    if all("inherit" in r for r in rows):
        lines.append(([r["inherit"]["loss"] for r in rows], "^-", "teacher's first layers, fine-tuned", {}))
    lines += [([r[key]["loss"] for r in rows], "s--", f"scratch, {rows[0][key]['steps']} steps", {})
              for key in ("scratch_x1", f"scratch_x{factor}")]
    stages.plot_against_depth(path, [r["depth"] for r in rows], lines, "validation loss (nats / byte)")
