"""Heur Learngene and Auto Learngene end to end, each stage a run of the one trainer:
task manifest → VGG ancestor trained task after task, Net2Wider-widened between tasks → gene (the last
`heur.gene_blocks` blocks; Auto: the blocks a pseudo descendant chose to resemble, or that changed least)
→ per inheritable task, a descendant from the
same gene (with an EWC penalty on the inherited blocks) and a scratch descendant of the same architecture (and
of the Auto gene's, when that differs) → WORKDIR/summary.{json,md}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from learngene_jax import data, stages
from learngene_jax.config_lib import with_changes
from learngene_jax.data.device import normalize
from learngene_jax.errors import ConfigError, fail
from learngene_jax.genes.core import Gene
from learngene_jax.genes.io import save_gene
from learngene_jax.methods.heur import auto
from learngene_jax.methods.heur import gene as heur
from learngene_jax.methods.heur.ewc import empirical_fisher, save_ewc
from learngene_jax.methods.heur.tasks import build_manifest, resolve_examples, save_manifest
from learngene_jax.methods.heur.widen import final_widths, widen
from learngene_jax.models.io import load_model, save_model
from learngene_jax.models.vgg import VGGAncestor, VGGDescendant, init_variables
from learngene_jax.models.vit import count_params
from learngene_jax.objectives.losses import cross_entropy
from learngene_jax.stages import Stages, markdown_table, timings_table

SECTIONS = ("heur", "auto")  # pipeline settings, not trainer keys


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Heur Learngene: the hand-picked gene (the last `heur.gene_blocks` blocks) against scratch descendants."""
    return HeurRun(config, workdir).run(select_auto=False)


def run_auto(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Auto Learngene: the automatically selected gene against the hand-picked one and scratch, on the same tasks."""
    return HeurRun(config, workdir).run(select_auto=True)


class HeurRun:
    """The stages of one Heur/Auto run in `workdir` (each stage resumes or reuses its own sub-workdir)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        self.config, self.h = config, config.heur
        self.stages = Stages(config, workdir, drop=SECTIONS)
        self.workdir, self.timings, self.timed = self.stages.workdir, self.stages.timings, self.stages.timed
        schedule = [tuple(tuple(int(v) for v in step) for step in growth) for growth in self.h.ancestor.widen]
        if len(schedule) != self.h.continual_tasks - 1:
            fail(ConfigError, f"heur.ancestor.widen has {len(schedule)} widening steps but {self.h.continual_tasks} "
                              f"continual tasks need {self.h.continual_tasks - 1} (one between each pair of tasks)")
        self.schedule = schedule
        final_widths(self.h.ancestor.widths, schedule)  # validates the schedule before anything runs

    def stage_config(self, name: str, task: dict[str, Any], stage: Any, **changes: Any) -> ml_collections.ConfigDict:
        """A trainer config for one task: its classes (relabelled 0..N-1), shots and shot seed, and the stage's
        epochs, batch size and learning rate."""
        # one evaluation, at the end: the summary reads the final top-1 (an eval per epoch costs more than the
        # few-shot training itself)
        c = with_changes(self.config, task="train", name=name, epochs=stage.epochs, batch_size=stage.batch_size,
                         eval_every_epochs=stage.epochs,
                         **{"optim.lr": stage.lr, "data.classes": tuple(task["classes"]), "data.shots": task["shots"],
                            "data.subset_seed": task["subset_seed"]}, **changes)
        for section in SECTIONS:
            if section in c:
                del c[section]
        return c

    # -- stages ------------------------------------------------------------------------------------------------

    def tasks(self) -> dict[str, Any]:
        """Build, resolve and save the task manifest (WORKDIR/tasks.json)."""
        h, d = self.h, self.config.data
        train_source = data.make_source(with_changes(self.config.data, classes=()), d.train_split)
        test_source = data.make_source(with_changes(self.config.data, classes=()), d.eval_split)
        manifest = build_manifest(
            train_source.num_classes, sizes=tuple(h.split), continual_ways=h.continual_ways,
            continual_tasks=h.continual_tasks, continual_shots=h.continual_shots, inheritable_ways=h.inheritable_ways,
            inheritable_tasks=h.inheritable_tasks, shots=h.shots, seed=h.task_seed, shuffle=h.shuffle_classes,
            dataset=d.name)
        manifest = resolve_examples(manifest, train_source, test_source)
        save_manifest(self.workdir / "tasks.json", manifest)
        return manifest

    def ancestor(self, manifest: dict[str, Any], track: bool) -> dict[str, Any]:
        """Train the ancestor on every continual task in turn, widening it between tasks with a fresh head for
        each task's classes; with `track`, record each block's change per task (methods/heur/auto.py)."""
        h, a = self.h, self.h.ancestor
        root = self.workdir / "ancestor"
        model = VGGAncestor(num_classes=h.continual_ways, image_size=self.config.data.image_size,
                            in_chans=self.config.data.channels, widths=tuple(a.widths), pool_after=tuple(a.pool_after),
                            hidden=tuple(a.hidden), dropout=a.dropout)
        variables = _init(model, jax.random.key(self.config.seed))
        rows, scores = [], {s: [] for s in auto.LEAST_CHANGE}
        for t, task in enumerate(manifest["continual"]):
            start = time.perf_counter()
            if t:
                model, variables = widen(model, variables, self.schedule[t - 1],
                                         np.random.default_rng([self.config.seed, t]))
                # a new task has new classes: its head starts fresh (every other array is kept)
                variables["params"]["head"] = fresh_head(jax.random.fold_in(jax.random.key(self.config.seed), t),
                                                         variables["params"]["head"]["kernel"].shape)
            init_dir = save_model(root / task["name"] / "init", model, variables, overwrite=True,
                                  origin="widened" if t else "scratch")
            cfg = self.stage_config(f"ancestor_{task['name']}", task, a, init=str(init_dir),
                                    model={"name": "vgg_ancestor"})
            if track and t:
                scores["gradients"].append(auto.relative_gradient(
                    model, variables, _examples(cfg, self.h.auto_examples), len(model.widths)).tolist())
            out = self.stages.train_config(f"ancestor/{task['name']}", cfg, root / task["name"])
            model, trained = load_model(out["model_dir"])
            if track and t:
                scores["weights"].append(auto.relative_change(variables["params"], trained["params"],
                                                              len(model.widths)).tolist())
            variables = jax.tree_util.tree_map(np.asarray, trained)
            wall = round(time.perf_counter() - start, 2)
            self.timings[f"ancestor/{task['name']}"] = wall
            rows.append({"task": task["name"], "classes": task["classes"], "widths": list(model.widths),
                         "top1": out["top1"], "params": out["params"], "wall_s": wall})
        return {"model": model, "variables": variables, "tasks": rows, "scores": scores}

    def pseudo_descendant(self, manifest: dict[str, Any], anc: dict[str, Any], blocks: tuple[int, ...]
                          ) -> dict[str, Any]:
        """The paper's criterion (methods/heur/auto.py): a fresh model of the descendants' architecture (the gene of
        `blocks` → random lower stack + gene-shaped blocks + head) trained on a source task (`auto.pseudo_task`
        of the continual sequence; never an inheritable task) while matching every ancestor block, with the
        matching weights meta-learned; returns the per-block scores and the pair weights."""
        a = self.config.auto
        tasks = manifest["continual"]
        if not -len(tasks) <= a.pseudo_task < len(tasks):
            fail(ConfigError, f"auto.pseudo_task must index the {len(tasks)} continual tasks, got {a.pseudo_task}")
        task = tasks[a.pseudo_task]
        model, variables = anc["model"], anc["variables"]
        pseudo = self.descendant_model(heur.meta_from_aux(model, blocks, selection="heur"), len(task["classes"]))
        cfg = self.stage_config("pseudo_descendant", task, self.h.descendant)
        images, labels = (np.concatenate(v) for v in zip(*_examples(cfg), strict=True))
        names = [f"lower{i}" for i in range(len(pseudo.lower_widths))] + [
            f"gene{j}" for j in range(len(pseudo.gene_widths))]
        black = -np.asarray(cfg.data.mean, np.float32) / np.asarray(cfg.data.std, np.float32)  # normalised 0
        out = auto.pseudo_descendant_scores(
            model, variables, [f"block{i}" for i in range(len(model.widths))], pseudo,
            _init(pseudo, jax.random.key(self.config.seed + 2)), names, images, labels, epochs=a.epochs,
            batch_size=a.batch_size, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay, schedule=a.schedule,
            meta_lr=a.meta_lr, meta_weight_decay=a.meta_weight_decay, inner_steps=a.inner_steps, beta=a.beta,
            crop_padding=a.crop_padding, flip=a.flip, pad_value=black[: images.shape[-1]], lambda_init=a.lambda_init,
            seed=self.config.seed)
        return {**out, "task": task["name"], "blocks": names}

    def gene(self, label: str, model: VGGAncestor, variables: dict[str, Any], blocks: tuple[int, ...],
             selection: str) -> Gene:
        """Cut `blocks` (with their BatchNorm statistics) out of the final ancestor and save them as a gene."""
        meta = heur.meta_from_aux(model, blocks, selection=selection)
        gene = heur.extract(variables, meta)
        save_gene(self.workdir / "genes" / label, gene, overwrite=True)
        return gene

    def descendant_model(self, meta: Any, num_classes: int | None = None) -> VGGDescendant:
        """The descendant architecture of a gene with `meta` under `heur.descendant`, for `num_classes` (default:
        the inheritable tasks' ways; the pseudo descendant uses its source task's)."""
        d = self.h.descendant
        return heur.descendant_model(meta, num_classes=num_classes or self.h.inheritable_ways,
                                     lower_widths=tuple(d.lower_widths), lower_pool_after=tuple(d.lower_pool_after),
                                     final_pool=d.final_pool, hidden=tuple(d.hidden), dropout=d.dropout)

    def descendant(self, task: dict[str, Any], index: int, label: str, gene: Gene, inherit: bool = True
                   ) -> dict[str, Any]:
        """Train one descendant of `gene`'s architecture on an inheritable task, starting from the stored gene
        (`inherit`, with the EWC penalty) or from scratch. All descendants of a task share the random lower stack
        and head (one key per task), so a gene/scratch pair differs only in the inherited blocks."""
        root = self.workdir / "descendants" / task["name"]
        model = self.descendant_model(gene.meta)
        key = jax.random.fold_in(jax.random.key(self.config.seed + 1), index)
        variables = heur.expand(gene, model, rng=key) if inherit else _init(model, key)
        init_dir = save_model(root / f"init_{label}", model, variables, overwrite=True,
                              origin=f"gene:{self.workdir / 'genes' / label}" if inherit else "scratch")
        cfg = self.stage_config(f"{task['name']}_{label}", task, self.h.descendant, init=str(init_dir),
                                model={"name": "vgg_descendant"})
        fisher_s = None
        if inherit and self.h.ewc_weight:
            start = time.perf_counter()
            fisher = self.fisher(model, variables, gene, cfg)
            fisher_s = round(time.perf_counter() - start, 2)
            ewc_dir = save_ewc(root / f"ewc_{label}", gene.params["params"], fisher, overwrite=True)
            cfg = with_changes(cfg, **{"ewc.weight": float(self.h.ewc_weight), "ewc.path": str(ewc_dir)})
        out = self.stages.train_config(f"descendants/{task['name']}/{label}", cfg, root / label)
        return {"top1": out["top1"], "loss": out["loss"], "params": out["params"], "fisher_s": fisher_s,
                "train_s": out["train_time_s"]}

    def fisher(self, model: VGGDescendant, variables: dict[str, Any], gene: Gene,
               cfg: ml_collections.ConfigDict) -> dict[str, Any]:
        """The diagonal empirical Fisher of the inherited params at the gene's weights: per example, the squared
        gradient of log p(y|x) (BatchNorm in eval mode, so each example is scored alone), averaged over the task's
        training images (`heur.fisher_examples`, 0 = all)."""
        rest = {k: v for k, v in variables["params"].items() if k not in gene.params["params"]}

        def log_likelihood(inherited, image, label):
            logits = model.apply({"params": {**rest, **inherited}, "batch_stats": variables["batch_stats"]},
                                 image[None], train=False)
            return -cross_entropy(logits, label[None])[0]

        return empirical_fisher(log_likelihood, gene.params["params"], _examples(cfg, self.h.fisher_examples))

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self, select_auto: bool) -> dict[str, Any]:
        """Every stage, then the summary."""
        h = self.h
        if select_auto:
            auto.check_settings(self.config.auto)
            if h.continual_tasks < 2:
                fail(ConfigError, "Auto Learngene needs at least 2 continual tasks (it measures change between them)")
        manifest = self.timed("tasks", self.tasks)
        start = time.perf_counter()
        anc = self.ancestor(manifest, track=select_auto)
        self.timings["ancestor"] = round(time.perf_counter() - start, 2)
        num_blocks = len(anc["model"].widths)
        picks = {"heur": heur.last_blocks(num_blocks, h.gene_blocks)}
        results: dict[str, Any] = {"method": "auto" if select_auto else "heur", "manifest": str(
            self.workdir / "tasks.json"), "split": manifest["split"], "ancestor": anc["tasks"]}
        if select_auto:
            stat = self.config.auto.statistic
            means = {s: np.mean(v, axis=0).tolist() for s, v in anc["scores"].items()}
            layers = self.config.auto.layers or h.gene_blocks
            pseudo = None
            if stat == "pseudo_descendant":
                pseudo = self.timed("pseudo_descendant", self.pseudo_descendant, manifest, anc, picks["heur"])
                means = {"pseudo_descendant": pseudo["scores"].tolist(), **means}
            window = {s: list(auto.select_most(m, layers) if s not in auto.LEAST_CHANGE else
                              auto.select_blocks(m, layers)) for s, m in means.items()}
            picks["auto"] = tuple(window[stat])
            results["auto"] = {
                "statistic": stat, "layers": layers, "scores": means, "per_task": anc["scores"],
                "chosen": list(picks["auto"]), "heur": list(picks["heur"]), "window": window,
                "least_changing": {s: list(auto.least_changing(m, layers)) for s, m in means.items()
                                   if s in auto.LEAST_CHANGE}}
            if pseudo is not None:
                # the control: λ reads only the ancestor's features, so λ at its init is what the same run
                # selects with the meta step off (auto.meta_lr=0)
                results["auto"]["pseudo_descendant"] = {
                    "task": pseudo["task"], "pair_weights": np.round(pseudo["pair_weights"], 5).tolist(),
                    "pair_weights_init": np.round(pseudo["pair_weights_init"], 5).tolist(),
                    "scores_init": pseudo["scores_init"].tolist(),
                    "window_meta_off": list(auto.select_most(pseudo["scores_init"], layers)),
                    "lambda_shift": pseudo["lambda_shift"], "top1": pseudo["top1"], "ce": pseudo["ce"],
                    "blocks": pseudo["blocks"]}
        gene_list = {}
        for label, blocks in picks.items():
            gene_list[label] = self.timed(f"gene/{label}", self.gene, label, anc["model"], anc["variables"], blocks,
                                          "heur" if label == "heur" else f"auto:{self.config.auto.statistic}")
        results["genes"] = {label: {"blocks": list(g.meta.blocks), "widths": list(g.meta.widths),
                                    "params": count_params(g.params["params"]),
                                    "path": str(self.workdir / "genes" / label)} for label, g in gene_list.items()}
        scratch_of = {"scratch": "heur"}  # each scratch baseline has the architecture of one gene's descendants
        if "auto" in gene_list and self.descendant_model(gene_list["auto"].meta) != self.descendant_model(
                gene_list["heur"].meta):
            scratch_of["scratch_auto"] = "auto"  # another lower stack or gene width: a like-for-like baseline too
        rows = []
        for i, task in enumerate(manifest["inheritable"]):
            row: dict[str, Any] = {"task": task["name"], "classes": task["classes"],
                                   "train": len(task["train_indices"]), "test": task["test_count"]}
            for label, gene in gene_list.items():
                if label == "auto" and picks["auto"] == picks["heur"]:
                    row[label] = dict(row["heur"], same_as="heur")  # the same gene: not trained twice
                    continue
                row[label] = self.timed(f"descendants/{task['name']}/{label}", self.descendant, task, i, label, gene)
            for label, source in scratch_of.items() if h.scratch else ():
                row[label] = self.timed(f"descendants/{task['name']}/{label}", self.descendant, task, i, label,
                                        gene_list[source], inherit=False)
            rows.append(row)
        results["descendants"] = rows
        labels = [k for k in LABELS if k in rows[0]]
        results["accuracy"] = {k: _mean_std([r[k]["top1"] for r in rows]) for k in labels}
        results["timings_s"] = self.timings
        results["total_s"] = round(self.timings["tasks"] + self.timings["ancestor"] + sum(
            v for k, v in self.timings.items() if k.startswith(("gene/", "descendants/", "pseudo_descendant"))), 1)
        write_summary(self.workdir, results)
        return results


def _init(model: Any, key: jax.Array) -> dict[str, Any]:
    """Fresh variables of a VGG model (numpy, so they can be edited in place)."""
    return jax.tree_util.tree_map(np.asarray, init_variables(model, key))


def fresh_head(key: jax.Array, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """A Dense layer's params as nn.Dense initialises them (LeCun-normal kernel, zero bias)."""
    kernel = jax.nn.initializers.lecun_normal()(key, shape, jnp.float32)
    return {"kernel": np.asarray(kernel), "bias": np.zeros(shape[-1], np.float32)}


def _examples(cfg: ml_collections.ConfigDict, limit: int = 0):
    """(images, labels) batches of a task's training examples (its shots), eval transform, normalised, padding
    dropped."""
    source = data.make_source(cfg.data, cfg.data.train_split, train=True)
    loader = data.make_loader(cfg, cfg.data.train_split, train=False, batch_size=cfg.batch_size, source=source)
    seen = 0
    for batch in loader.epoch(0):
        keep = batch["mask"] > 0
        if limit:
            keep &= np.arange(len(keep)) < limit - seen
        if keep.any():
            yield normalize(batch["images"][keep], loader.mean, loader.std), batch["labels"][keep]
        seen += int(keep.sum())
        if limit and seen >= limit:
            return


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) over tasks."""
    arr = np.asarray(values, np.float64)
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, 4),
            "n": len(arr)}


LABELS = {"heur": "Heur gene (last blocks)", "auto": "Auto gene", "scratch": "scratch",
          "scratch_auto": "scratch (Auto gene's architecture)"}


def summary_table(results: dict[str, Any]) -> str:
    """Per-task top-1 of each kind of descendant, then mean ± std over tasks."""
    rows = results["descendants"]
    labels = [k for k in LABELS if k in rows[0]]
    head = ["task", "classes", "train / test"] + [LABELS[k] for k in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["task"], ",".join(map(str, r["classes"])), f"{r['train']} / {r['test']}"]
                                       + [f"{r[k]['top1']:.3f}" for k in labels]) + " |")
    acc = results["accuracy"]
    lines.append("| **mean ± std** | | | " + " | ".join(f"**{acc[k]['mean']:.3f} ± {acc[k]['std']:.3f}**"
                                                     for k in labels) + " |")
    return "\n".join(lines)


def write_summary(workdir: Path, results: dict[str, Any]) -> None:
    """summary.json and summary.md (accuracy table, genes, Auto scores, ancestor tasks, stage timings)."""
    genes = "\n".join(f"- {k}: blocks {v['blocks']} (widths {v['widths']}, {v['params']:,} params) → {v['path']}"
                      for k, v in results["genes"].items())
    sections = ["Top-1 on all test images of each task's classes; mean ± sample std over tasks.", "## Genes", genes]
    if "auto" in results:
        a = results["auto"]
        scores = list(a["scores"].values())
        sections += [f"## Auto selection (statistic: {a['statistic']}, {a['layers']} consecutive blocks)",
                     markdown_table(["block", *(f"mean {s}" for s in a["scores"])],
                                    [[b, *(f"{v[b]:.4g}" for v in scores)] for b in range(len(scores[0]))]),
                     f"Chosen: {a['chosen']}; hand-picked Heur: {a['heur']}. Window per statistic: {a['window']}; "
                     f"individually least-changing: {a['least_changing']}."]
        if "pseudo_descendant" in a:
            pd = a["pseudo_descendant"]
            same = "the same" if pd["window_meta_off"] == a["window"]["pseudo_descendant"] else "different"
            sections += [
                "### Control: the pseudo descendant with the meta step off",
                markdown_table(["block", "score (meta-learned λ)", "score (λ at init = meta step off)"],
                               [[b, f"{v:.4g}", f"{v0:.4g}"] for b, (v, v0) in enumerate(
                                   zip(a["scores"]["pseudo_descendant"], pd["scores_init"], strict=True))]),
                f"Window with the meta step: {a['window']['pseudo_descendant']}; with it off: "
                f"{pd['window_meta_off']} ({same}). "
                f"λ moved {pd['lambda_shift']:.4g} from its init (mean over pairs of |E_x λ − E_x λ_init|); pseudo "
                f"descendant on {pd['task']}: training top-1 {pd['top1']:.3f}, last-epoch CE {pd['ce']:.4f}."]
    sections += ["## Ancestor tasks",
                 markdown_table(["task", "classes", "widths", "top-1", "wall (s)"],
                                [[r["task"], r["classes"], r["widths"], f"{r['top1']:.3f}", r["wall_s"]]
                                 for r in results["ancestor"]]),
                 "## Stage times (s)", timings_table(results["timings_s"]), f"Total: {results['total_s']:.0f} s."]
    title = (f"{'Auto' if results['method'] == 'auto' else 'Heur'} Learngene ({len(results['descendants'])} "
             f"inheritable tasks)")
    stages.write_summary(workdir, results, title=title, table=summary_table(results), sections=sections)
