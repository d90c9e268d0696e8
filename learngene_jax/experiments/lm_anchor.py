"""The learngene claim at nanoGPT's Shakespeare-char anchor (issue 26.2), each stage a run of the one trainer, per
seed: a teacher GPT → TLEG and SWS aux GPTs distilled from it → descendants of several depths from each gene and
from the teacher's first layers (Inheritune), and scratch GPTs of the same depths, all trained with nanoGPT's recipe
and evaluated every N steps on the validation split → per arm over the seeds: the loss curve, the steps needed to
reach scratch's final loss, the FLOP account → WORKDIR/summary.{md,json,png}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from learngene_jax import stages
from learngene_jax.config_lib import with_changes
from learngene_jax.data.text import load_corpus, text_source
from learngene_jax.errors import ConfigError, fail
from learngene_jax.models import RUNTIME_FIELDS, create_model
from learngene_jax.models.llama import abstract_lm_params
from learngene_jax.models.vit import count_params
from learngene_jax.stages import Stages, markdown_table, timings_table

GENES = {"tleg": "TLEG", "sws": "SWS", "inherit": "teacher's first layers"}
ARMS = {**GENES, "scratch": "scratch"}
COLORS = {"tleg": "tab:blue", "sws": "tab:orange", "inherit": "tab:green", "scratch": "black"}


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run every seed's stages in WORKDIR/seed{N} (finished stages are reused) and write the summary."""
    a = config.lm_anchor
    check(config)
    root = Path(workdir).expanduser().absolute()
    train = text_source(config.data, config.data.train_split, train=True)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    per_seed, timings = [], {}
    for seed in a.seeds:
        pipe = Stages(with_changes(config, seed=seed), root / f"seed{seed}", drop=("lm_anchor",))
        per_seed.append(run_seed(pipe, config, steps_per_epoch))
        timings.update({f"seed{seed}/{k}": v for k, v in pipe.timings.items()})
    rows = aggregate(per_seed, list(a.depths), config.max_steps)
    costs = cost_account(config, train.num_classes, rows)
    results = {"experiment": "lm_anchor", "data": {**load_corpus(config.data.name, config.data.path).describe(),
                                                   "vocabulary": train.num_classes},
               "seeds": list(a.seeds), "depths": list(a.depths), "reference_depth": config.model.depth,
               "steps": config.max_steps,
               "short_steps": a.short_steps, "eval_every": a.eval_every, "rows": rows,
               "gene_stages": gene_stages(per_seed), "costs": costs,
               "claims": claims(rows, config.max_steps, a.short_steps), "per_seed": per_seed,
               "stages": timings, "total_s": round(sum(timings.values()), 1)}
    write_summary(root, results)
    return results


def check(config: ml_collections.ConfigDict) -> None:
    """ConfigErrors for settings the experiment cannot run."""
    a = config.lm_anchor
    if len(a.seeds) < 1 or len(set(a.seeds)) != len(a.seeds):
        fail(ConfigError, f"lm_anchor.seeds must list distinct seeds, got {tuple(a.seeds)}")
    if not a.depths or min(a.depths) < 1:
        fail(ConfigError, f"lm_anchor.depths must be depths >= 1, got {tuple(a.depths)}")
    if a.inherit and max(a.depths) >= a.teacher_depth:
        fail(ConfigError, f"lm_anchor.inherit takes the teacher's first D layers: the teacher (depth "
                          f"{a.teacher_depth}) must be deeper than every descendant (depths {tuple(a.depths)})")
    if not 0 <= a.short_steps < config.max_steps or a.eval_every < 1:
        fail(ConfigError, f"lm_anchor.short_steps must lie in [0, max_steps={config.max_steps}) and eval_every be "
                          f">= 1, got {a.short_steps} and {a.eval_every}")


def run_seed(pipe: Stages, config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict[str, Any]:
    """Teacher, both aux runs and every arm of one seed (the seed is pipe's config's)."""
    a, model = config.lm_anchor, config.model.to_dict()

    def budget(steps: int, eval_every: int) -> dict[str, Any]:
        """`steps` steps of the recipe's optimizer (its cosine ends at the last), evaluated every `eval_every`."""
        return {"max_steps": steps, "epochs": -(-steps // steps_per_epoch), "eval_every_epochs": 1,
                "eval_every_steps": eval_every}

    teacher = pipe.stage("teacher", model={**model, "depth": a.teacher_depth},
                         **budget(a.teacher_steps, a.gene_eval_every))
    kd = {"distill": {"type": "soft", "teacher": "", "alpha": a.kd_alpha, "temperature": a.kd_temperature,
                      "teacher_init": teacher["model_dir"]}}
    arch = {k: v for k, v in model.items() if k != "name"}
    aux_budget = budget(a.aux_steps, a.gene_eval_every)
    auxes = {"tleg": pipe.stage("tleg_aux", model={**arch, "name": f"tleg_{model['name']}", "depth": a.tleg_depth},
                                **kd, **aux_budget),
             "sws": pipe.stage("sws_aux", model={**arch, "name": f"sws_{model['name']}",
                                                 "depth": sum(a.sws_stage_sizes),
                                                 "stage_sizes": tuple(a.sws_stage_sizes)}, **kd, **aux_budget)}
    runtime = {k: v for k, v in model.items() if k in RUNTIME_FIELDS}  # a descendant runs as the recipe's model
    arms: dict[str, list[dict[str, Any]]] = {}
    for depth in a.depths:
        starts = {m: {"model": {"name": "descendant", **runtime}, "gene": aux["gene"], "depth": depth}
                  for m, aux in auxes.items()}
        if a.inherit:
            starts["inherit"] = {"init": teacher["model_dir"], "init_method": "layer_gene", "depth": depth,
                                 "layer_gene.layers": tuple(range(depth)), "layer_gene.place": "bottom"}
        starts["scratch"] = {"model": {**model, "depth": depth}}
        for arm, start in starts.items():
            out = pipe.stage(f"{arm}_L{depth}", **start, eval_at_start=True, **budget(config.max_steps, a.eval_every))
            row = {"depth": depth, "params": out["params"], "init_loss": out["init"]["loss"], "loss": out["loss"],
                   "steps": out["steps"], "curve": curve_of(out)}
            if a.short_steps and arm != "scratch":  # the paper's protocol: a budget of its own, cosine included
                row["short_loss"] = pipe.stage(f"{arm}_L{depth}_short", **start, **budget(a.short_steps, 0))["loss"]
            arms.setdefault(arm, []).append(row)
    genes = {"teacher": teacher, **{f"{m}_aux": aux for m, aux in auxes.items()}}
    return {"seed": pipe.config.seed, "arms": arms,
            "genes": {k: {"loss": v["loss"], "steps": v["steps"], "params": v["params"], "curve": curve_of(v)}
                      for k, v in genes.items()}}


def curve_of(stage: dict[str, Any]) -> dict[str, list[float]]:
    """A stage's evaluations as {'step': [...], 'loss': [...]} (final.json's curve)."""
    points = stage.get("curve") or [{"step": stage["steps"], "loss": stage["loss"]}]
    return {"step": [p["step"] for p in points], "loss": [p["loss"] for p in points]}


def steps_to_reach(steps: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """The first step at which the eval curve reaches `target` (loss <= target), linearly interpolated between the
    evaluation before and the first one at or below it; None when no evaluation reaches it."""
    for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if loss <= target:
            if i == 0:
                return float(step)
            s0, l0 = steps[i - 1], losses[i - 1]  # l0 > target >= loss
            return s0 + (l0 - target) / (l0 - loss) * (step - s0)
    return None


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{'mean', 'std' (sample, n − 1; 0 for one value), 'n'}; mean and std None for no values."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def aggregate(per_seed: list[dict[str, Any]], depths: list[int], scratch_steps: int) -> list[dict[str, Any]]:
    """Per depth and arm over the seeds: init and final loss, the steps to reach the same seed's scratch final loss
    at that depth (per seed and as mean ± std of the seeds that reach it), the short run's loss, the mean curve."""
    rows = []
    for i, depth in enumerate(depths):
        row: dict[str, Any] = {"depth": depth}
        for arm in (a for a in ARMS if a in per_seed[0]["arms"]):
            runs = [s["arms"][arm][i] for s in per_seed]
            targets = [s["arms"]["scratch"][i]["loss"] for s in per_seed]
            reach = [steps_to_reach(r["curve"]["step"], r["curve"]["loss"], t) for r, t in zip(runs, targets,
                                                                                                  strict=True)]
            losses = np.asarray([r["curve"]["loss"] for r in runs], np.float64)  # (seeds, evaluations)
            row[arm] = {"params": runs[0]["params"], "init_loss": mean_std([r["init_loss"] for r in runs]),
                        "loss": mean_std([r["loss"] for r in runs]),
                        "reach": {**mean_std([x for x in reach if x is not None]), "per_seed": reach,
                                  "within": sum(x is not None and x <= scratch_steps / 3 for x in reach)},
                        "curve": {"step": runs[0]["curve"]["step"], "mean": losses.mean(0).tolist(),
                                  "std": (losses.std(0, ddof=1) if len(runs) > 1 else 0 * losses[0]).tolist()}}
            if "short_loss" in runs[0]:
                short = [r["short_loss"] for r in runs]
                row[arm]["short_loss"] = {**mean_std(short),
                                          "at_or_below": sum(s <= t for s, t in zip(short, targets, strict=True))}
        rows.append(row)
    return rows


def gene_stages(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Teacher and aux runs over the seeds: final loss and its drop over the last fifth of the run (how much the run
    was still learning, the cosine's tail included)."""
    out = {}
    for name in per_seed[0]["genes"]:
        runs = [s["genes"][name] for s in per_seed]
        out[name] = {"steps": runs[0]["steps"], "params": runs[0]["params"],
                     "loss": mean_std([r["loss"] for r in runs]),
                     "last_fifth_drop": mean_std([tail_drop(r["curve"]) for r in runs])}
    return out


def tail_drop(curve: dict[str, list[float]], fraction: float = 0.2) -> float:
    """Loss at the last evaluation at or before (1 − fraction) of the run minus the final loss (0 with no such
    evaluation)."""
    end = curve["step"][-1]
    before = [loss for step, loss in zip(curve["step"], curve["loss"], strict=True) if step <= (1 - fraction) * end]
    return before[-1] - curve["loss"][-1] if before else 0.0


# -- the cost account -------------------------------------------------------------------------------------------
def flops_per_token(params: int, depth: int, width: int, context: int) -> int:
    """Training FLOPs per token (forward + backward): 6·N + 12·L·H·Q·T with H·Q = width, nanoGPT's
    `estimate_mfu` (model.py, after PaLM's appendix B); N = `flop_params`."""
    return 6 * params + 12 * depth * width * context


def forward_flops_per_token(params: int, depth: int, width: int, context: int) -> int:
    """Forward FLOPs per token (a frozen teacher in distillation): a third of `flops_per_token`."""
    return 2 * params + 4 * depth * width * context


def flop_params(model: Any) -> int:
    """nanoGPT's N: every parameter but the position table (`get_num_params(non_embedding=True)`); the tied head
    counts once."""
    params = abstract_lm_params(model)
    return count_params(params) - (count_params(params["wpe"]) if "wpe" in params else 0)


def cost_account(config: ml_collections.ConfigDict, vocab: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Training FLOPs (evaluations left out) of the teacher, each aux run (its own steps + the teacher's forward),
    every arm's steps to reach scratch's final loss and scratch's whole run; each gene's one-off cost (teacher +
    its aux; the layer gene: the teacher) amortised over the descendants made from it here. TFLOP = 1e12 FLOPs."""
    a, context, width = config.lm_anchor, int(config.data.context), int(config.model.width)
    tokens = config.batch_size * context  # per step
    fields = {k: v for k, v in config.model.items() if k not in ("name", "depth")}

    def per_step(depth: int, forward: bool = False) -> int:
        model = create_model(config.model.name, **{"vocab_size": vocab, "max_positions": context, **fields,
                                                   "depth": depth})
        rate = forward_flops_per_token if forward else flops_per_token
        return tokens * rate(flop_params(model), depth, width, context)

    teacher_forward = per_step(a.teacher_depth, forward=True)
    one_off = {"teacher": {"depth": a.teacher_depth, "steps": a.teacher_steps,
                           "gflop_per_step": per_step(a.teacher_depth) / 1e9}}
    for name, depth in (("tleg_aux", a.tleg_depth), ("sws_aux", sum(a.sws_stage_sizes))):
        one_off[name] = {"depth": depth, "steps": a.aux_steps, "gflop_per_step": (per_step(depth) + teacher_forward)
                         / 1e9}
    for stage in one_off.values():
        stage["tflop"] = stage["steps"] * stage["gflop_per_step"] / 1e3
    n = len(rows)
    genes = {g: {"tflop": one_off["teacher"]["tflop"] + (one_off[f"{g}_aux"]["tflop"] if g != "inherit" else 0.0)}
             for g in GENES if g in rows[0]}
    for gene in genes.values():
        gene["per_descendant_tflop"] = gene["tflop"] / n
    arms = []
    for row in rows:
        step_gflop = per_step(row["depth"]) / 1e9
        scratch = config.max_steps * step_gflop / 1e3
        for arm in (g for g in GENES if g in row):
            reach = row[arm]["reach"]
            reached = reach["n"] == len(reach["per_seed"])  # every seed: a mean over all of them
            cost = reach["mean"] * step_gflop / 1e3 if reached else None
            total = cost + genes[arm]["per_descendant_tflop"] if reached else None
            arms.append({"arm": arm, "depth": row["depth"], "gflop_per_step": step_gflop, "reach_tflop": cost,
                         "with_gene_tflop": total, "scratch_tflop": scratch,
                         "ratio": total / scratch if reached else None})
    for name, gene in genes.items():  # descendants needed before the one-off cost pays for itself
        rows_of = [r for r in arms if r["arm"] == name]
        saving = sum(r["scratch_tflop"] - r["reach_tflop"] for r in rows_of) / n if all(
            r["reach_tflop"] is not None for r in rows_of) else None
        gene["saving_per_descendant_tflop"] = saving
        gene["pays_back_after"] = gene["tflop"] / saving if saving and saving > 0 else None
    return {"tokens_per_step": tokens, "one_off": one_off, "genes": genes, "arms": arms, "descendants_per_gene": n}


def claims(rows: list[dict[str, Any]], steps: int, short_steps: int) -> list[dict[str, Any]]:
    """Per gene and depth, the paper-style claim checked in every seed: the descendant reaches scratch's final loss
    within a third of scratch's steps (on its full-run curve), and its run of `short_steps` ends at or below it."""
    out = []
    for row in rows:
        for arm in (g for g in GENES if g in row):
            r = row[arm]
            seeds = len(r["reach"]["per_seed"])
            out.append({"arm": arm, "depth": row["depth"], "seeds": seeds, "reach_within_third": r["reach"]["within"],
                        "short_at_or_below": r["short_loss"]["at_or_below"] if "short_loss" in r else None,
                        "holds": r["reach"]["within"] == seeds})
    return out


# -- the summary ------------------------------------------------------------------------------------------------
def _pm(stat: dict[str, Any], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:,.{digits}f}" + (f" ± {stat['std']:,.{digits}f}" if stat["n"] > 1 else "")


def _reach(reach: dict[str, Any]) -> str:
    seeds = len(reach["per_seed"])
    if not reach["n"]:
        return f"not reached (0 of {seeds} seeds)"
    return _pm(reach, 0) + ("" if reach["n"] == seeds else f" ({reach['n']} of {seeds} seeds; others not reached)")


def results_table(results: dict[str, Any]) -> str:
    """Per depth and arm: params, validation loss at init and after the run, steps to reach scratch's final loss,
    the short run's loss (mean ± sample std over the seeds)."""
    steps, short = results["steps"], results["short_steps"]
    head = ["depth", "arm", "params", "val loss at init", f"val loss after {steps:,} steps",
            "steps to reach scratch's final loss"]
    head += [f"val loss after {short:,} steps (own schedule)"] if short else []
    body = []
    for row in results["rows"]:
        for arm in (a for a in ARMS if a in row):
            r = row[arm]
            short_cell = [_pm(r["short_loss"]) if "short_loss" in r else "—"] if short else []
            body.append([row["depth"], ARMS[arm], f"{r['params']:,}", _pm(r["init_loss"]), _pm(r["loss"]),
                         _reach(r["reach"]), *short_cell])
    return markdown_table(head, body)


def cost_tables(results: dict[str, Any]) -> list[str]:
    """The one-off stages, then every gene arm against scratch (TFLOP), then each gene's pay-back."""
    c, g = results["costs"], results["gene_stages"]
    one_off = markdown_table(["stage", "depth", "steps", "GFLOP per step", "TFLOP", "val loss",
                              "drop over its last fifth"],
                             [[name, s["depth"], f"{s['steps']:,}", f"{s['gflop_per_step']:.3f}", f"{s['tflop']:.2f}",
                               _pm(g[name]["loss"]), _pm(g[name]["last_fifth_drop"])]
                              for name, s in c["one_off"].items()])
    n = c["descendants_per_gene"]
    arms = markdown_table(
        ["gene", "depth", "TFLOP to reach scratch's loss", f"+ one-off ÷ {n} descendants", "scratch's TFLOP",
         "ratio"],
        [[GENES[r["arm"]], r["depth"], _tflop(r["reach_tflop"]), _tflop(r["with_gene_tflop"]),
          f"{r['scratch_tflop']:.2f}", "—" if r["ratio"] is None else f"{r['ratio']:.2f}"] for r in c["arms"]])
    pay = [f"- {GENES[name]}: one-off {gene['tflop']:.2f} TFLOP; " + (
        f"saves {gene['saving_per_descendant_tflop']:.2f} TFLOP per descendant on average, so it pays for itself "
        f"after {gene['pays_back_after']:.1f} descendants like these" if gene["pays_back_after"] is not None else
        "never pays for itself at these depths (a descendant does not reach scratch's loss in every seed, or saves "
        "nothing)") for name, gene in c["genes"].items()]
    return [one_off, arms, "\n".join(pay)]


def _tflop(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def claim_lines(results: dict[str, Any]) -> str:
    """One line per gene and depth: the claim (≤ a third of scratch's steps), per seed."""
    third, short = results["steps"] / 3, results["short_steps"]
    lines = []
    for c in results["claims"]:
        line = (f"- {GENES[c['arm']]}, depth {c['depth']}: reaches scratch's final loss within {third:,.0f} steps in "
                f"{c['reach_within_third']} of {c['seeds']} seeds")
        if c["short_at_or_below"] is not None:
            line += f"; its {short:,}-step run ends at or below it in {c['short_at_or_below']} of {c['seeds']}"
        lines.append(line + (" — holds" if c["holds"] else " — does not hold"))
    return "\n".join(lines)


def write_summary(workdir: Path, results: dict[str, Any]) -> None:
    """summary.{md,json,png}: the loss table, the claim, the cost account, the data, the stage times."""
    d, seeds = results["data"], ", ".join(map(str, results["seeds"]))
    about = (f"{d['corpus']} {d['sha256'][:16]}…: {d['train']['bytes']:,} train and {d['validation']['bytes']:,} "
             f"validation bytes, {d['vocabulary']} tokens. Validation loss in nats per token over the whole "
             f"validation split, evaluated every {results['eval_every']} steps; seeds {seeds}; mean ± sample std "
             f"(n − 1). Every arm trains {results['steps']:,} steps with the same recipe (scratch's final loss is "
             f"the target at its depth, per seed); the short runs train {results['short_steps']:,} steps with a "
             f"schedule of their own. Scratch at depth {results['reference_depth']} is the recipe itself "
             f"(configs/nanogpt_shakespeare_char.py).")
    stages.write_summary(
        workdir, results, title="Learngene at nanoGPT's Shakespeare-char anchor", table=results_table(results),
        sections=[about, "## The claim (≤ a third of scratch's steps)", claim_lines(results),
                  "## Cost account (training FLOPs: 6·N + 12·L·d·T per token, nanoGPT's estimate; evaluations "
                  "left out)", *cost_tables(results), "## Stages", timings_table(results["stages"]),
                  f"Total: {results['total_s']:.0f} s."],
        plot=lambda path: plot(path, results))


def plot(path: Path, results: dict[str, Any]) -> None:
    """Validation loss against steps, one panel per depth (mean over seeds, ± std shaded; scratch's final loss
    dashed), and one of the teacher and aux runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(4 * (len(rows) + 1), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=False):
        target = row["scratch"]["loss"]["mean"]
        tops, lows = [], [target - 0.1]
        for arm in (a for a in ARMS if a in row):
            c = row[arm]["curve"]
            mean, std = np.asarray(c["mean"]), np.asarray(c["std"])
            ax.plot(c["step"], mean, "-", color=COLORS[arm], label=ARMS[arm], lw=1.2)
            ax.fill_between(c["step"], mean - std, mean + std, color=COLORS[arm], alpha=0.2, lw=0)
            tops.append(mean[min(1, len(mean) - 1)])  # from the second evaluation: init losses would flatten the rest
            lows.append(mean.min())
        ax.axhline(target, color="gray", ls="--", lw=0.8)
        ax.axvline(results["steps"] / 3, color="gray", ls=":", lw=0.8)
        low = min(lows) - 0.05
        ax.set_ylim(low, max(max(tops) + 0.05, low + 0.5))
        ax.set_title(f"depth {row['depth']}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation loss (nats / token)")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    for s in results["per_seed"]:
        for (name, gene), color in zip(s["genes"].items(), ("tab:red", "tab:blue", "tab:orange"), strict=False):
            ax.plot(gene["curve"]["step"], gene["curve"]["loss"], "-", color=color, lw=1, alpha=0.7,
                    label=name if s is results["per_seed"][0] else None)
    reference = [r for r in rows if r["depth"] == results["reference_depth"]]
    if reference:
        ax.axhline(reference[0]["scratch"]["loss"]["mean"], color="black", ls="--", lw=0.8,
                   label=f"scratch, depth {results['reference_depth']} (the recipe)")
    ax.set_title("teacher and aux runs (each seed)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
