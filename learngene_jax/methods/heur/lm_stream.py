"""Heur / Auto Learngene with LoRA on a stream of text tasks (reference/learngene-lm.md §2, Def A), each stage a run
of the one trainer, against plain LoRA:

1. ancestor: LoRA adapters on the frozen base decoder config.init, trained on the source tasks one after another
   (each task's run starts from the previous task's adapters, `lora.gene`);
2. genes: Heur = the adapters of the last k layers; Auto = of the k layers whose effective update changed least over
   the tasks after the first (`lm.adapter_change`, summed over tasks);
3. descendants on the target task: plain LoRA (PEFT init), Heur and Auto (those layers' adapters from the gene, the
   rest PEFT init), evaluated every `eval_every` steps; the gene arms also on fractions of the target data (same
   epochs, so fewer steps);
4. the YuanMou report: validation loss against epochs, epochs each arm needs to reach plain LoRA's final loss, and
   the final loss with a fraction of the data → WORKDIR/summary.{md,json,png}.

A task is the documents whose names match a pattern (`data.documents`; for the stdlib corpus a package such as
'email/*'); its validation set is the corpus's held-out documents of that task.

    learngene train --config configs/lm_lora.py --config.init=runs/lm_demo/teacher/model --workdir runs/lm_lora
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import stages
from learngene_jax.config_lib import with_changes
from learngene_jax.data.text import text_source
from learngene_jax.errors import ConfigError, fail
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.methods.heur import lm
from learngene_jax.methods.heur.auto import least_changing
from learngene_jax.models.io import load_model
from learngene_jax.stages import Stages, markdown_table, timings_table

ARMS = {"lora": "LoRA", "heur": "Heur (LoRA gene)", "auto": "Auto (LoRA gene)"}


def task_name(pattern: str) -> str:
    """'email/*' → 'email'."""
    return pattern.split("/")[0].strip("*") or pattern


def run(config: ml_collections.ConfigDict, workdir: str | Path, pipe: Stages | None = None) -> dict[str, Any]:
    """All stages (finished ones in `workdir` are reused) and the summary; `pipe` lets a bigger experiment (the LM
    demo) run these stages under its own stage runner."""
    s = config.lora_stream
    if not config.init:
        fail(ConfigError, "the LoRA stream adapts a trained decoder: pass --config.init=MODEL_DIR (e.g. the LM demo's "
                          "WORKDIR/teacher/model, or a `learngene convert from-hf` directory)")
    if len(s.sources) < 2:
        fail(ConfigError, f"lora_stream.sources needs at least 2 tasks (Auto compares the adapters over the tasks "
                          f"after the first), got {tuple(s.sources)}")
    base, variables = load_model(config.init)
    depth = base.depth
    if not 1 <= s.gene_layers < depth:
        fail(ConfigError, f"lora_stream.gene_layers must lie in 1..{depth - 1} (the base has {depth} layers)")
    own = pipe is None
    pipe = pipe or Stages(config, workdir, drop=("lora_stream", "lm_demo"))
    prefix = "" if own else "lora_"
    lora = {"lora.rank": s.rank, "lora.alpha": s.alpha, "lora.targets": tuple(s.targets), "init": config.init,
            "optim.lr": s.lr, "epochs": 10_000}

    def steps_per_epoch(pattern: str, fraction: float = 1.0) -> int:
        data = with_changes(config, **{"data.documents": (pattern,), "data.fraction": fraction}).data
        return max(1, len(text_source(data, data.train_split, train=True)) // config.batch_size)

    def task(pattern: str, steps: int, fraction: float = 1.0) -> dict[str, Any]:
        """The changes that train `steps` steps on the task `pattern` (warm-up over warmup_fraction of them)."""
        return {"data.documents": (pattern,), "data.fraction": fraction, "max_steps": steps,
                "optim.warmup_steps": max(1, round(s.warmup_fraction * steps))}

    def stage(name: str, **changes: Any) -> dict[str, Any]:
        return pipe.stage(prefix + name, **lora, **changes)

    for pattern in (*s.sources, s.target):  # every task must exist before anything trains
        steps_per_epoch(pattern)
    if any(not 0 < f < 1 for f in s.fractions):
        fail(ConfigError, f"lora_stream.fractions must lie in (0, 1) (the full data is the arms' own run), got "
                          f"{tuple(s.fractions)}")
    # 1. the ancestor's stream
    ancestors, gene_dir = [], ""
    for t, pattern in enumerate(s.sources):
        out = stage(f"ancestor_{t}_{task_name(pattern)}", **task(pattern, s.source_steps),
                    **{"lora.gene": gene_dir})
        ancestors.append(out)
        gene_dir = out["gene"]
    # 2. the genes
    snapshots = [load_gene(a["gene"]) for a in ancestors]
    rho = sum(lm.adapter_change(variables["params"]["layers"], a, b)
              for a, b in zip(snapshots, snapshots[1:], strict=False))
    chosen = {"heur": tuple(range(depth - s.gene_layers, depth)),
              "auto": tuple(sorted(least_changing(list(rho), s.gene_layers)))}
    gene_dirs = {arm: str(save_gene(pipe.workdir / f"{prefix}{arm}_gene", lm.select(snapshots[-1], layers),
                                    overwrite=True)) for arm, layers in chosen.items()}
    # 3. descendants on the target task
    target = task(s.target, s.target_steps)
    per_epoch = steps_per_epoch(s.target)
    arms: dict[str, Any] = {}
    for arm in ARMS:
        out = stage(f"{arm}_{task_name(s.target)}", **target, eval_at_start=True, eval_every_steps=s.eval_every,
                    **{"lora.gene": gene_dirs.get(arm, "")})
        arms[arm] = {"init_loss": out["init"]["loss"], "loss": out["loss"], "curve": out["curve"],
                     "steps": out["steps"], "wall_s": out["wall_s"]}
    fractions: dict[str, dict[str, float]] = {}
    for fraction in s.fractions:
        steps = max(1, int(round(fraction * s.target_steps)))
        for arm in ("heur", "auto"):
            out = stage(f"{arm}_{task_name(s.target)}_data{int(round(100 * fraction))}",
                        **task(s.target, steps, fraction), **{"lora.gene": gene_dirs[arm]})
            fractions.setdefault(arm, {})[f"{fraction:g}"] = out["loss"]
    baseline = arms["lora"]["loss"]
    for row in arms.values():
        row["epochs_to_lora_final"] = epochs_to_reach(row["curve"], baseline)
    results = {"sources": list(s.sources), "target": s.target, "chosen_layers": chosen, "rho": [float(r) for r in rho],
               "steps_per_epoch": per_epoch, "arms": arms, "fractions": fractions,
               "ancestor_loss": [a["loss"] for a in ancestors], "rank": s.rank, "gene_layers": s.gene_layers,
               "stages": {k: v for k, v in pipe.results.items() if k.startswith(prefix)}}
    if own:
        results["total_s"] = pipe.total_s
        write_summary(pipe.workdir, results)
    return results


def epochs_to_reach(curve: list[dict[str, float]], loss: float) -> float | None:
    """The first epoch at which the validation loss is at most `loss`, linearly interpolated between evaluations;
    None when the curve never gets there."""
    for prev, cur in zip(curve, curve[1:], strict=False):
        if cur["loss"] <= loss:
            if prev["loss"] <= loss:
                return prev["epoch"]
            w = (prev["loss"] - loss) / (prev["loss"] - cur["loss"])
            return prev["epoch"] + w * (cur["epoch"] - prev["epoch"])
    return curve[0]["epoch"] if curve and curve[0]["loss"] <= loss else None


def summary_table(results: dict[str, Any]) -> str:
    """One row per arm: loss at the start and the end, epochs to plain LoRA's final loss, loss with less data."""
    fractions = sorted({f for per in results["fractions"].values() for f in per}, key=float)
    head = ["arm", "gene layers", "loss at epoch 0", f"loss after {results['arms']['lora']['steps']} steps",
            "epochs to LoRA's final loss", *(f"loss with {float(f):.0%} of the data" for f in fractions)]
    body = []
    for arm, label in ARMS.items():
        r = results["arms"][arm]
        reach = r["epochs_to_lora_final"]
        body.append([label, ",".join(map(str, results["chosen_layers"].get(arm, ()))) or "—",
                     f"{r['init_loss']:.3f}", f"{r['loss']:.3f}", "—" if reach is None else f"{reach:.2f}",
                     *(f"{results['fractions'][arm][f]:.3f}" if f in results["fractions"].get(arm, {}) else "—"
                       for f in fractions)])
    return markdown_table(head, body)


def description(results: dict[str, Any]) -> str:
    """The setting in words (tasks, genes, the Auto scores)."""
    epoch = results["steps_per_epoch"]
    return (f"Base decoder frozen; LoRA rank {results['rank']} on every layer. Ancestor stream: "
            + " → ".join(f"{task_name(p)} ({loss:.3f})" for p, loss in zip(results["sources"],
                                                                           results["ancestor_loss"], strict=True))
            + f" (validation loss after each task). Target task {task_name(results['target'])}: one epoch = "
            f"{epoch} steps. Gene = the adapters of {results['gene_layers']} layers: Heur the last, Auto the least "
            f"changing (ρ per layer: {', '.join(f'{r:.3f}' for r in results['rho'])}). Loss = nats per byte on the "
            f"task's held-out documents; the data-fraction runs train the same epochs on a seeded random part of the "
            f"task's documents (data.fraction, data.subset_seed).")


def write_summary(workdir: Path, results: dict[str, Any]) -> None:
    """summary.{md,json,png} of a standalone stream."""
    stages.write_summary(workdir, results, title="Heur / Auto Learngene with LoRA on a text-task stream",
                         table=summary_table(results),
                         sections=[description(results), "## Stages",
                                   timings_table({k: v["wall_s"] for k, v in results["stages"].items()}),
                                   f"Total: {results['total_s']:.0f} s."],
                         plot=lambda path: plot_file(path, results))


def plot_file(path: Path, results: dict[str, Any]) -> None:
    """Validation loss against epochs on the target task, one line per arm (YuanMou's fig. 2), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5, 3.5))
    for arm, label in ARMS.items():
        curve = results["arms"][arm]["curve"]
        axis.plot([c["epoch"] for c in curve], [c["loss"] for c in curve], "o-" if arm != "lora" else "s--",
                  label=label, markersize=3)
    axis.axhline(results["arms"]["lora"]["loss"], color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel(f"epochs on {task_name(results['target'])}")
    axis.set_ylabel("validation loss (nats / byte)")
    axis.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

