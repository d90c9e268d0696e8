"""Learngene Pool end to end, each training stage a run of the one trainer: teacher (or a given model
directory) → learngene instances distilled from it (`lgpool_distill`) → the pool, its stitch layers initialised
from the trained distillation projections (`lgpool.stitch_init='projections'`, the paper's mode) or by least
squares (`'least_squares'`, SN-Net's) → pool fine-tuning, one stitch configuration per step (`lgpool_finetune`)
→ every configuration evaluated (top-1, params, FLOPs) → WORKDIR/summary.{json,md,png} and the frontier's
descendants exported. `lgpool.compare_stitch_init` also fine-tunes and evaluates a pool from the other init.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from learngene_jax import data, stages
from learngene_jax.config_lib import with_changes
from learngene_jax.convert import state_dict, vit
from learngene_jax.data.device import normalize, prepare_batch
from learngene_jax.data.mix import mix_batch
from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.lgpool.descendants import STITCH_INITS, assemble_pool, config_cost, describe, export_config
from learngene_jax.methods.lgpool.models import DEIT_LAYOUT, LearngenePool, instance_of
from learngene_jax.models.io import load_model, save_model
from learngene_jax.models.vit import ViT
from learngene_jax.stages import Stages, timings_table

LS_PIPELINES = ("train", "eval")  # how the least-squares stitch init draws its batch (see stitch_init_images)


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run every stage (each resumes or reuses its own sub-workdir) and write the summary."""
    workdir = Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    lg = config.lgpool
    n = len(lg.widths)
    if lg.stitch_init not in STITCH_INITS:
        fail(ConfigError, f"lgpool.stitch_init must be one of {STITCH_INITS}, got {lg.stitch_init!r}")
    if lg.ls_pipeline not in LS_PIPELINES:
        fail(ConfigError, f"lgpool.ls_pipeline must be one of {LS_PIPELINES}, got {lg.ls_pipeline!r}")
    if lg.ls_batch < 1:
        fail(ConfigError, f"lgpool.ls_batch (the images the least-squares stitch init is fitted on) must be at least "
                          f"1, got {lg.ls_batch}")
    if not (len(lg.heads) == len(lg.points) == n >= 1):
        fail(ConfigError, f"lgpool.widths {tuple(lg.widths)}, heads {tuple(lg.heads)} and points "
                          f"{tuple(lg.points)} need one entry per instance")
    pipe = Stages(config, workdir)
    stage, timed = pipe.stage, pipe.timed  # a trainer stage is reused when this workdir already finished it

    # Stage 0: the teacher — a given model directory (e.g. converted DeiT-B) or a ViT trained here.
    teacher_dir = lg.teacher_init
    if not teacher_dir and lg.teacher_epochs <= 0:
        fail(ConfigError, "Learngene Pool needs a teacher: pass --config.lgpool.teacher_init=MODEL_DIR (e.g. DeiT-B "
                          "from `python -m learngene_jax.convert from-timm`) or set lgpool.teacher_epochs to train one")
    if not teacher_dir:
        teacher_dir = stage("teacher", model=lg.teacher.to_dict(), epochs=lg.teacher_epochs,
                            **{"optim.lr": lg.teacher_lr})["model_dir"]
    teacher, _ = load_model(teacher_dir)
    if not isinstance(teacher, ViT):
        fail(ConfigError, f"the Learngene Pool teacher must be a ViT (its block features are distilled); "
                          f"{teacher_dir} holds a {type(teacher).__name__}")
    distill = {"type": "soft", "teacher": "", "teacher_init": str(teacher_dir), "alpha": lg.alpha,
               "temperature": lg.temperature}

    # Stage 1: one student per width, distilled from the teacher's logits and block features.
    instances, projections = [], []
    for k in range(n):
        out = stage(f"distill_{k}_w{lg.widths[k]}", **distill_stage(lg, teacher, distill, k))
        student, variables = load_model(out["model_dir"])
        params = {key: value for key, value in variables["params"].items() if key != "projections"}
        save_model(workdir / "instances" / str(k), instance_of(student), {"params": params}, overwrite=True,
                   origin=out["model_dir"])
        instances.append(params)
        projections.append(jax.device_get(variables["params"]["projections"]))

    # Stage 2: the pool, its stitch layers initialised from the projections or by least squares on one batch of
    # training images; fine-tuned with (ce_weight·CE + kd_weight·KD), one configuration per step.
    stem = instance_of(student)  # every instance has the same classes, image size and patches
    pool = LearngenePool(num_classes=stem.num_classes, image_size=stem.image_size, patch_size=stem.patch_size,
                         in_chans=stem.in_chans, widths=tuple(lg.widths), heads=tuple(lg.heads), depth=lg.depth,
                         pairs=tuple(lg.pairs), kernel_size=lg.kernel_size, stride=lg.stride,
                         eval_config=int(np.argmax(lg.widths)), **DEIT_LAYOUT)
    images = stitch_init_images(config, stem.num_classes)
    loader = data.make_loader(config, config.data.eval_split, train=False,
                              batch_size=config.eval_batch_size or config.batch_size)
    modes = [lg.stitch_init] + [m for m in STITCH_INITS if m != lg.stitch_init and lg.compare_stitch_init]
    finetune = finetune_stage(config, distill)
    evaluated = {}
    for mode in modes:
        suffix = "" if mode == lg.stitch_init else f"_{mode}"
        init_params = timed(f"stitch_init{suffix}", assemble_pool, pool, instances, images, mode, projections)
        init_dir = save_model(workdir / f"pool_init{suffix}", pool, {"params": init_params}, overwrite=True)
        out = stage(f"finetune{suffix}", init=str(init_dir), **finetune)
        pool, finetuned = load_model(out["model_dir"])
        # Every configuration, before and after fine-tuning.
        scores = timed(f"evaluate{suffix}", lambda m, p, f: (evaluate_configs(m, p, loader),
                                                             evaluate_configs(m, f["params"], loader)),
                       pool, init_params, finetuned)
        evaluated[mode] = (*scores, finetuned, out)
    before, after, finetuned, out = evaluated[lg.stitch_init]
    rows = []
    for cid, cfg in enumerate(pool.configs()):
        params, flops = config_cost(pool, cfg)
        rows.append({"id": cid, "name": describe(pool, cfg), "front": cfg.front, "end": cfg.end,
                     "front_last": cfg.front_last, "end_first": cfg.end_first, "stitch_layer": cfg.layer,
                     "blocks": cfg.front_last + 1 + (0 if cfg.alone else lg.depth - cfg.end_first),
                     "params": params, "flops": flops, "top1_init": before[cid], "top1": after[cid],
                     **{f"top1_init_{m}": evaluated[m][0][cid] for m in evaluated if m != lg.stitch_init},
                     **{f"top1_{m}": evaluated[m][1][cid] for m in evaluated if m != lg.stitch_init}})
    frontier = pareto_frontier(rows)
    exported = timed("export", export_descendants, pool, finetuned["params"], sorted(set(frontier) | set(lg.export)),
                     workdir / "descendants")
    results = {"rows": rows, "frontier": frontier, "exported": exported, "stages": pipe.results,
               "timings_s": pipe.timings,
               "total_s": pipe.total_s, "teacher": str(teacher_dir),
               "pool_dir": out["model_dir"], "stitch_init": lg.stitch_init,
               "stitch_init_means": {m: {"init": round(float(np.mean(e[0])), 4), "finetuned": round(float(
                   np.mean(e[1])), 4)} for m, e in evaluated.items()}}
    write_summary(workdir, results)
    return results


def distill_stage(lg: ml_collections.ConfigDict, teacher: ViT, distill: dict[str, Any], k: int) -> dict[str, Any]:
    """The trainer changes of stage 1 for instance k: an `lgpool_student` of its width (DeiT layout, drop-path
    `lgpool.drop_path_rate`) trained with `lgpool_distill` from the teacher `distill` names."""
    model = {"name": "lgpool_student", "width": lg.widths[k], "num_heads": lg.heads[k], "depth": lg.depth,
             "patch_size": teacher.patch_size, "teacher_width": teacher.width, "teacher_depth": teacher.depth,
             "points": lg.points[k], "drop_path_rate": lg.drop_path_rate, "scan_layers": True, **DEIT_LAYOUT}
    return {"model": model, "objective": "lgpool_distill", "distill": distill, "epochs": lg.distill_epochs,
            "optim.lr": lg.distill_lr}


def finetune_stage(config: ml_collections.ConfigDict, distill: dict[str, Any]) -> dict[str, Any]:
    """The trainer changes of stage 2: the pool trained with `lgpool_finetune` at the stage's epochs, batch, lr
    and `aug.*` overrides (`lgpool.finetune_*`)."""
    lg = config.lgpool
    return {"model": {"name": "lgpool"}, "objective": "lgpool_finetune", "distill": distill,
            "epochs": lg.finetune_epochs, "batch_size": lg.finetune_batch_size or config.batch_size,
            "optim.lr": lg.finetune_lr, **{f"aug.{k}": v for k, v in lg.finetune_aug.items()}}


def stitch_init_images(config: ml_collections.ConfigDict, num_classes: int) -> jax.Array:
    """One batch of `lgpool.ls_batch` normalised training images (batch, H, W, C) for the least-squares stitch
    init. `lgpool.ls_pipeline='train'`: drawn as the official `initialize_model_stitching_layer` draws them — the
    stage-2 loader (training transforms, its sampler) and random erasing, then mixup/cutmix of `config.aug`
    (the official `mixup_fn` is built from the run's args although stage-2 training does not apply it);
    'eval': the first images of the split, unaugmented."""
    lg = config.lgpool
    train = lg.ls_pipeline == "train"
    stage2 = with_changes(config, **{f"aug.{k}": v for k, v in lg.finetune_aug.items()})
    loader = data.make_loader(stage2, config.data.train_split, train=train, batch_size=lg.ls_batch)
    batch = next(iter(loader.epoch(0)))
    if not train:
        return normalize(batch["images"], loader.mean, loader.std)
    rng = jax.random.key(config.seed)
    images = prepare_batch(batch, loader.mean, loader.std, jax.random.fold_in(rng, 0))
    aug = config.aug
    return mix_batch(jax.random.fold_in(rng, 1), images, jnp.asarray(batch["labels"]), num_classes,
                     mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, switch_prob=aug.mixup_switch_prob,
                     prob=aug.mixup_prob, smoothing=aug.label_smoothing)[0]


@partial(jax.jit, static_argnums=0)
def _hits(pool: LearngenePool, params: dict[str, Any], images: jax.Array, labels: jax.Array, mask: jax.Array,
          config_id: jax.Array) -> jax.Array:
    logits = pool.apply({"params": params}, images, config_id=config_id)
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)


def evaluate_configs(pool: LearngenePool, params: dict[str, Any], loader: data.Loader) -> list[float]:
    """Top-1 of every configuration over the whole split (on this process's devices): one compiled program
    serves every configuration, the config id is an argument."""
    num = len(pool.configs())
    correct, count = np.zeros(num), 0.0
    for batch in loader.epoch(0):
        x = normalize(batch["images"], loader.mean, loader.std)
        y, m = (jnp.asarray(batch[k]) for k in ("labels", "mask"))
        correct += np.asarray(jax.device_get([_hits(pool, params, x, y, m, jnp.int32(c)) for c in range(num)]))
        count += float(batch["mask"].sum())
    return [round(float(c) / count, 6) for c in correct]


def pareto_frontier(rows: list[dict[str, Any]]) -> list[int]:
    """Ids of the configurations that no smaller (fewer params) configuration matches in top-1."""
    best, out = -1.0, []
    for row in sorted(rows, key=lambda r: (r["params"], -r["top1"])):
        if row["top1"] > best:
            best = row["top1"]
            out.append(row["id"])
    return out


def export_descendants(pool: LearngenePool, params: dict[str, Any], config_ids: list[int],
                       directory: Path) -> dict[str, dict[str, str]]:
    """Each configuration as a model directory (a plain ViT or a StitchedViT), plus a timm .safetensors when it
    is a plain ViT."""
    out = {}
    for cid in config_ids:
        if not 0 <= cid < len(pool.configs()):
            fail(ConfigError, f"lgpool.export names config {cid}, but the pool has {len(pool.configs())} (0.."
                              f"{len(pool.configs()) - 1})")
        model, descendant = export_config(pool, params, cid)
        entry = {"model_dir": str(save_model(directory / f"config_{cid}", model, {"params": descendant},
                                             overwrite=True, origin=f"lgpool config {cid}"))}
        if type(model) is ViT:
            timm_kw = vit.timm_kwargs(model)
            entry["timm"] = str(state_dict.write_safetensors(directory / f"config_{cid}.safetensors",
                                                             vit.to_timm(jax.device_get(descendant)),
                                                             {"timm_kwargs": json.dumps(timm_kw)}))
        out[str(cid)] = entry
    return out


INIT_NAMES = {"projections": "proj. init", "least_squares": "LS init"}


def summary_table(results: dict[str, Any]) -> str:
    """The markdown table of every configuration (frontier members marked); with a second stitch init
    compared, its init and fine-tuned top-1 columns too."""
    frontier = set(results["frontier"])
    main = results.get("stitch_init", "least_squares")
    others = [m for m in INIT_NAMES if m != main and f"top1_{m}" in results["rows"][0]]
    head = [f"top-1 {INIT_NAMES[main]}", "top-1 fine-tuned"] + [c for m in others for c in (
        f"top-1 {INIT_NAMES[m]}", f"fine-tuned from {INIT_NAMES[m]}")]
    lines = ["| id | configuration | blocks | params | FLOPs (M) | " + " | ".join(head) + " | frontier |",
             "|---|---|---|---|---|" + "---|" * len(head) + "---|"]
    for r in results["rows"]:
        values = [r["top1_init"], r["top1"]] + [v for m in others for v in (r[f"top1_init_{m}"], r[f"top1_{m}"])]
        lines.append(f"| {r['id']} | {r['name']} | {r['blocks']} | {r['params']:,} | {r['flops'] / 1e6:.2f} | "
                     + " | ".join(f"{v:.3f}" for v in values) + f" | {'★' if r['id'] in frontier else ''} |")
    means = results.get("stitch_init_means")
    if means and len(means) > 1:
        lines += ["", "Mean top-1 over the stitched and unstitched configurations, by stitch init: " + "; ".join(
            f"{INIT_NAMES[m]} {v['init']:.3f} at init → {v['finetuned']:.3f} fine-tuned" for m, v in means.items())
            + f" (fine-tuned pool kept: {INIT_NAMES[main]})."]
    return "\n".join(lines)


def write_summary(workdir: Path, results: dict[str, Any]) -> None:
    """summary.json, summary.md (configuration table + stage timings) and summary.png (top-1 vs params)."""
    stages.write_summary(
        workdir, results, title=f"Learngene Pool: {len(results['rows'])} descendants from one pool",
        table=summary_table(results),
        sections=["Each row is one configuration (`wA[:i]→wB[j:]`: blocks 0..i-1 of the width-A instance, a stitch "
                  "layer, blocks j.. and the head of the width-B instance). ★: on the accuracy-vs-params frontier.",
                  "## Stages", timings_table(results["timings_s"]), f"Total: {results['total_s']:.0f} s."],
        plot=lambda path: plot_summary(path, results))


def plot_summary(path: Path, results: dict[str, Any]) -> None:
    """Top-1 against parameters for every configuration, the frontier joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        stitched = f"stitched {r['name'].split('[')[0]}→{r['name'].split('→')[-1].split('[')[0]}"
        groups.setdefault("instances" if r["stitch_layer"] < 0 else stitched, []).append(r)
    for label, members in groups.items():
        marker = "*" if label == "instances" else "o"
        points = ax.scatter([r["params"] / 1e6 for r in members], [r["top1"] for r in members], marker=marker,
                            s=90 if marker == "*" else 25, label=label, zorder=3)
        ax.scatter([r["params"] / 1e6 for r in members], [r["top1_init"] for r in members], marker=marker,
                   s=20, alpha=0.25, color=points.get_facecolor()[0], zorder=2)
    by_id = {r["id"]: r for r in rows}
    front = sorted((by_id[i] for i in results["frontier"]), key=lambda r: r["params"])
    ax.plot([r["params"] / 1e6 for r in front], [r["top1"] for r in front], "k--", lw=1, label="frontier")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(f"top-1 (faded: after the {INIT_NAMES[results.get('stitch_init', 'least_squares')]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
