"""The one trainer, for every stage: teacher/ancestor training, aux distillation (which ends by saving the
gene), descendant fine-tuning from a gene, and baselines.

Read top to bottom: mesh → data → student and teacher → shardings → optimizer → resume or init →
jitted steps → loop with evals, checkpoints and metrics → final artifacts. It knows no method: the student comes
from a registered builder (`students.py`), the loss from a registered objective plus any registered loss terms the
config turns on, and training phases from registered step variants (`registry.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from learngene_jax import checkpointing, data, genes, logs, sharding
from learngene_jax.data.device import normalize, prepare_batch
from learngene_jax.data.mix import mix_batch
from learngene_jax.data.tokenize import save_tokenizer
from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from learngene_jax.distributed import is_main_process
from learngene_jax.errors import ConfigError, UserError, fail
from learngene_jax.genes.io import save_gene
from learngene_jax.metrics import MetricWriter, Progress
from learngene_jax.models import compute_dtype
from learngene_jax.models.io import save_model
from learngene_jax.models.llama import check_context
from learngene_jax.models.vit import count_params
from learngene_jax.objectives import language  # noqa: F401 - registers the 'lm' objective
from learngene_jax.objectives.classification import BATCH_STATS, StepInputs, make_objective
from learngene_jax.objectives.losses import cross_entropy, topk_correct
from learngene_jax.objectives.teacher import Teacher, load_teacher
from learngene_jax.optim import build_optimizer, lr_schedule, only_trainable
from learngene_jax.registry import LOSS_TERMS, STEP_VARIANTS
from learngene_jax.students import Student, build_student


class Preempted(UserError):
    """A preemption notice (SIGTERM) arrived: every process saved the same step; rerunning the command resumes."""


class Diverged(UserError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


# Settings that give a checkpoint's step count its meaning: resuming under other values would silently
# reinterpret it (another batch size puts step N at another example of another epoch).
RESUME_KEYS = ("batch_size",)


def _check_resume(config: Any, workdir: Path) -> None:
    """Refuse to resume a workdir's checkpoints under another batch size (before config.json is overwritten)."""
    ckpt_dir, previous = workdir / "checkpoints", workdir / "config.json"
    if not previous.exists() or not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        return
    try:
        old = json.loads(previous.read_text())
    except (OSError, json.JSONDecodeError):
        return  # an unreadable record cannot be compared; the checkpoint itself is still checked on restore
    for key in RESUME_KEYS:
        if key in old and old[key] != config[key]:
            fail(ConfigError, f"{workdir} holds checkpoints of a run with {key}={old[key]} (its config.json); "
                              f"resuming with {key}={config[key]} would reinterpret their step count: rerun with "
                              f"--config.{key}={old[key]}, or use a new workdir")


def _check_context(config: Any, student: Student, teacher: Teacher | None) -> None:
    """A ConfigError before anything compiles when data.context tokens do not fit the positions of the student or
    the teacher (past GPT-2's table the loss turns NaN, which would read as a too-high learning rate)."""
    models = [(student.model, f"the student ({student.origin})")]
    if teacher is not None:
        models.append((teacher.model, f"the teacher ({config.distill.teacher_init})"))
    for model, who in models:
        try:
            check_context(model, int(config.data.context))
        except ValueError as e:
            own = model is student.model and student.origin == "scratch"  # its table is the config's to size
            fail(ConfigError, f"data.context: {who}: {e}; set --config.data.context={model.max_positions} or less"
                              + (" (or raise config.model.max_positions)" if own else ""))


def train(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Run `config` in `workdir` (resuming from its latest checkpoint) and return the final metrics."""
    workdir = Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    _check_resume(config, workdir)
    if main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    devices = jax.devices()[: config.mesh.num_devices] if config.mesh.num_devices else None
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    eval_batch = config.eval_batch_size or config.batch_size
    for what, size in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch)):
        if size % data_shards:
            fail(ConfigError, f"{what} {size} is not divisible by the {data_shards} devices that split the batch")

    if data.is_text(config) != (config.objective == "lm"):
        from learngene_jax.data.text import CORPORA

        fail(ConfigError, f"data.name={config.data.name!r} with objective={config.objective!r}: text corpora "
                          f"({', '.join(CORPORA)}) train language models with config.objective='lm', and the 'lm' "
                          f"objective needs one of them")
    # Data: each process loads its own share of every global batch (uint8 images, normalised inside the steps,
    # or int32 token windows of a text corpus).
    proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_data = data.make_loader(config, config.data.train_split, train=True, batch_size=config.batch_size,
                                  device_shards=data_shards, **proc)
    eval_data = data.make_loader(config, config.data.eval_split, train=False, batch_size=eval_batch, **proc)
    num_classes = train_data.source.num_classes
    steps_per_epoch = train_data.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    num_epochs = -(-total_steps // steps_per_epoch)

    # Student and frozen teacher.
    student = build_student(config, num_classes)
    model = student.model
    teacher = load_teacher(config.distill, config.data.image_size, num_classes,
                           getattr(train_data.source, "tokenizer", None), dtype=compute_dtype(config.precision))
    if data.is_text(config):
        _check_context(config, student, teacher)

    # Shardings from shapes alone (nothing allocated yet).
    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    schedule = lr_schedule(config.optim, config.batch_size, steps_per_epoch, total_steps)
    tx = build_optimizer(config.optim, schedule)
    if student.trainable is not None:  # e.g. LoRA: only the adapters train
        tx = only_trainable(tx, student.trainable)

    def init_state(rng, source):
        variables = student.init(rng, source)
        state = {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                 "opt_state": tx.init(variables["params"])}
        if BATCH_STATS in variables:
            state[BATCH_STATS] = variables[BATCH_STATS]
        return state

    abstract = jax.eval_shape(init_state, init_rng, student.source)
    strategy, rules = config.sharding.strategy, [tuple(r) for r in config.sharding.rules]
    state_shardings = sharding.tree_shardings(abstract, mesh, strategy, rules)
    state_shardings["step"] = sharding.replicated(mesh)
    frozen: dict[str, Any] = {}
    if teacher is not None:
        frozen["teacher"] = teacher.variables
    # Loss terms the config turns on (e.g. EWC): their arrays are frozen step inputs like the teacher's.
    loss_terms = {}
    for name, term in LOSS_TERMS.items():
        if (built := term(config, abstract["params"])) is not None:
            frozen[name], loss_terms[name] = built
    frozen = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh, strategy, rules))

    # Resume from the latest checkpoint (model state and the input pipeline's position), or initialise.
    ckpts = checkpointing.TrainCheckpoints(workdir / "checkpoints", keep=config.checkpoint.keep)
    latest = ckpts.latest_step()
    if latest is not None:
        target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                        abstract, state_shardings)
        state, _ = ckpts.restore(latest, target)
        batches = ckpts.restore_data(latest, lambda state: train_data.steps(total_steps, state=state),
                                     lambda: train_data.steps(total_steps, start=latest))
        logs.info(f"resumed from step {latest} in {ckpts.directory}")
    else:
        state = jax.jit(init_state, out_shardings=state_shardings)(init_rng, student.source)
        batches = train_data.steps(total_steps)
    num_params = count_params(abstract["params"])
    logs.info(f"[{config.name or 'train'}] {type(model).__name__} {num_params:,} params ({student.origin}); "
               f"{len(train_data.source)} train / {len(eval_data.source)} eval examples, {num_classes} classes; "
               f"{config.epochs} epochs x {steps_per_epoch} steps, batch {config.batch_size}; mesh "
               f"{dict(mesh.shape)} ({strategy})" + (f"; teacher {type(teacher.model).__name__}" if teacher else ""))

    phases = training_phases(config, model)
    compiled_steps: dict[tuple | None, Callable] = {}
    compiled_evals: dict[tuple | None, Callable] = {}

    def phase_of(epoch: int) -> tuple | None:
        """The model-field overrides trained in `epoch` (sorted items); None for the model as exported."""
        phase = next((tuple(sorted(o.items())) for start, o in reversed(phases) if epoch >= start), None)
        return phase or None

    def phase_model(phase: tuple | None) -> nn.Module:
        return model if phase is None else model.clone(**dict(phase))

    def train_step_for(epoch: int) -> Callable:
        """The jitted step of the tokenization phase that `epoch` is in (one compile per phase)."""
        phase = phase_of(epoch)
        if phase not in compiled_steps:
            compiled_steps[phase] = jax.jit(
                make_train_step(config, phase_model(phase), tx, schedule, teacher, num_classes, data_shards,
                                step_rng, mean=train_data.mean, std=train_data.std, loss_terms=loss_terms),
                in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
                out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
        return compiled_steps[phase]

    def eval_step_for(phase: tuple | None) -> Callable:
        """Evaluation with the tokenization being trained (None: the model as exported)."""
        if phase not in compiled_evals:
            compiled_evals[phase] = jax.jit(make_eval_step(phase_model(phase), eval_data.mean, eval_data.std),
                                            out_shardings=sharding.replicated(mesh))
        return compiled_evals[phase]

    eval_step = eval_step_for(None)

    writer = MetricWriter(workdir, enabled=main)
    progress = Progress(total_steps, config.batch_size, enabled=main, label=config.name or "train")
    step = int(jax.device_get(state["step"]))
    good_step = step  # the newest step whose losses were all finite
    pending: list[dict[str, jax.Array]] = []
    start_time = time.perf_counter()
    images_seen = 0

    def flush() -> None:
        """Check the queued step metrics (fetching them syncs the device), log them, stop on NaN/Inf."""
        nonlocal good_step
        if not pending:
            return
        fetched = jax.device_get(pending)
        pending.clear()
        for offset, m in enumerate(fetched):
            if not math.isfinite(float(m["loss"])):
                bad = good_step + offset + 1
                fail(Diverged, f"the loss became {float(m['loss'])} at step {bad}; stopped without saving, the last "
                               f"good checkpoint (step {ckpts.latest_step()}) is kept in {ckpts.directory}; lower "
                               f"optim.lr or set optim.grad_clip, then rerun the same command to resume")
        good_step += len(fetched)
        last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        writer.write(good_step, "train", {**last, "epoch": good_step / steps_per_epoch,
                                          "images_per_s": progress.images_per_s})
        progress.update(good_step, last["loss"])

    def save(step: int) -> None:
        flush()
        ckpts.save(step, state, {"step": step, "epoch": step / steps_per_epoch}, batches)

    init_results = None
    last_eval: tuple[int, dict[str, float]] = (-1, {})
    if config.eval_at_start:
        init_results = evaluate(eval_step, state, eval_data, mesh) if step == 0 else _first_eval(workdir)
        if step == 0:
            writer.write(0, "eval", {**init_results, "epoch": 0})
            progress.note(f"at init: eval top-1 {init_results['top1']:.4f} loss {init_results['loss']:.4f}")
    # A profile of `profile_steps` steps after this run's first, compiling, step (TensorBoard's profile plugin).
    profile = Profile(workdir / "profile", step + 1, config.profile_steps)
    try:
        with ckpts.watch_preemption():
            while step < total_steps:
                if ckpts.reached_preemption(step):  # every process answers alike, so all save this same step
                    save(step)
                    fail(Preempted, f"stopped by a preemption notice (SIGTERM) at step {step}; the state is saved in "
                                    f"{ckpts.directory}; run the same command to resume")
                epoch = step // steps_per_epoch
                batch = next(batches)
                if (position := int(batch.pop("step"))) != step:  # a restored iterator state that does not fit
                    fail(UserError, f"the input pipeline resumed at step {position} instead of {step}; rerun with "
                                    f"the data settings (data.workers included) of the interrupted run")
                profile.before(step)
                state, metrics = train_step_for(epoch)(state, sharding.global_batch(mesh, batch), frozen)
                step += 1
                profile.after(step, state)
                images_seen += config.batch_size
                pending.append(metrics)
                if step % config.log_every_steps == 0 or step == total_steps:
                    flush()
                if step % config.checkpoint.every_steps == 0:
                    save(step)
                if step % steps_per_epoch and step < total_steps:
                    if config.eval_every_steps and step % config.eval_every_steps == 0:
                        flush()
                        phase = phase_of(epoch)
                        results = evaluate(eval_step_for(phase), state, eval_data, mesh)
                        writer.write(step, "eval", {**results, "epoch": step / steps_per_epoch,
                                                    **({"phase": dict(phase)} if phase else {})})
                    continue
                if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == num_epochs:
                    flush()
                    # during a phase (e.g. As-ViT's re-tokenization), evaluate the model being trained; the final
                    # results below always come from the model as exported
                    phase = phase_of(epoch)
                    results = evaluate(eval_step_for(phase), state, eval_data, mesh)
                    last_eval = (step if phase is None else -1, results)
                    writer.write(step, "eval", {**results, "epoch": epoch + 1,
                                                **({"phase": dict(phase)} if phase else {})})
                    progress.note(f"epoch {epoch + 1}/{num_epochs}: eval top-1 {results['top1']:.4f} "
                                  f"top-5 {results['top5']:.4f} loss {results['loss']:.4f}"
                                  + (f" ({', '.join(f'{k}={v}' for k, v in phase)})" if phase else ""))
            save(step)
    finally:
        profile.stop()
        train_data.close()
        writer.close()
        ckpts.close()
    train_time = time.perf_counter() - start_time
    results = last_eval[1] if last_eval[0] == step else evaluate(eval_step, state, eval_data, mesh)
    summary = {"name": config.name, "origin": student.origin, "params": num_params, "steps": step,
               "epochs": step / steps_per_epoch, "train_time_s": round(train_time, 2),
               "images_per_s": round(images_seen / train_time, 1) if images_seen else None, **results}
    if data.is_text(config):  # the final model's loss on the eval split, nats per token (data.eval_windows=0: all)
        summary["eval_loss"] = results["loss"]
    if init_results is not None:
        summary["init"] = init_results
    if config.eval_every_steps and main:
        summary["curve"] = _eval_curve(workdir, step, steps_per_epoch)
    export(config, workdir, student, state, summary, main, getattr(train_data.source, "tokenizer", None))
    return summary


class Profile:
    """A jax.profiler trace of `steps` steps from `start` on (nothing when steps is 0), written to `directory`."""

    def __init__(self, directory: Path, start: int, steps: int):
        if steps < 0:
            fail(ConfigError, f"profile_steps must be >= 0, got {steps}")
        self.directory, self.start, self.end, self.active = directory, start, start + steps, False

    def before(self, step: int) -> None:
        if step == self.start and self.end > self.start:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, state: Any) -> None:
        if self.active and step >= self.end:
            jax.block_until_ready(state)  # the traced steps end on the device, not at dispatch
            self.stop()
            logs.info(f"profile of steps {self.start}-{self.end - 1} written to {self.directory} "
                      f"(tensorboard --logdir {self.directory})")

    def stop(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()


def _eval_curve(workdir: Path, last_step: int, steps_per_epoch: int) -> list[dict[str, float]]:
    """Every evaluation of the exported model recorded in this workdir up to `last_step` (resumed runs included,
    the newest record per step): [{'step', 'epoch', 'loss', 'top1'}, ...] in step order."""
    rows: dict[int, dict[str, float]] = {}
    path = workdir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        row = json.loads(line)
        if row.get("split") == "eval" and "phase" not in row and row["step"] <= last_step:
            rows[row["step"]] = {"step": row["step"], "epoch": row["step"] / steps_per_epoch, "loss": row["loss"],
                                 "top1": row["top1"]}
    return [rows[k] for k in sorted(rows)]


def _first_eval(workdir: Path) -> dict[str, float] | None:
    """The step-0 eval recorded by an earlier (interrupted) run of this workdir."""
    path = workdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "eval" and row.get("step") == 0:
                return {k: row[k] for k in ("loss", "top1", "top5")}
    return None


def training_phases(config: Any, model: nn.Module) -> list[tuple[int, dict[str, Any]]]:
    """(start_epoch, model-field overrides) phases from the registered step variants this config uses (at most
    one); empty overrides mean the model as exported."""
    used = [(name, phases) for name, variant in STEP_VARIANTS.items() if (phases := variant(config, model))]
    if len(used) > 1:
        fail(ConfigError, f"step variants {', '.join(n for n, _ in used)} are all on; one run can use one of them")
    return used[0][1] if used else []


def make_train_step(config: Any, model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    teacher: Teacher | None, num_classes: int, groups: int, rng: jax.Array, *,
                    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                    loss_terms: dict[str, Callable] | None = None) -> Callable:
    """(state, batch, frozen) → (state, metrics): uint8 images normalised with `mean`/`std` (float images are
    taken as normalised) and randomly erased where the batch has boxes, mixup/cutmix, the configured objective
    (teacher on the same mixed images), the active loss terms (name → (params, frozen[name]) → (loss, metrics)),
    gradients, optimizer update. `frozen` holds arrays that are inputs of the step but never trained or
    checkpointed (teacher variables, a loss term's arrays)."""
    aug = config.aug
    objective = make_objective(config, model, teacher)
    loss_terms = loss_terms or {}

    def step_fn(state, batch, frozen):
        step_key = jax.random.fold_in(rng, state["step"])
        r_mix, r_drop = jax.random.split(step_key)
        if "tokens" in batch:  # text: token ids in, the next tokens as labels (objective 'lm')
            tokens = batch["tokens"]
            inputs = StepInputs(tokens[:, :-1], None, tokens[:, 1:], r_drop)
        else:
            r_erase = jax.random.fold_in(step_key, 0xE2A5E)  # its own stream: mixup and dropout draws stay as they were
            images = prepare_batch(batch, mean, std, r_erase)
            images, targets = mix_batch(
                r_mix, images, batch["labels"], num_classes, mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                switch_prob=aug.mixup_switch_prob, prob=aug.mixup_prob, smoothing=aug.label_smoothing, groups=groups)
            inputs = StepInputs(images, targets, batch["labels"], r_drop)
        collections = {k: v for k, v in state.items() if k not in ("step", "params", "opt_state")}

        def loss_fn(params):
            loss, updates, extra = objective(params, collections, frozen, inputs)
            for name, term in loss_terms.items():
                term_loss, term_metrics = term(params, frozen[name])
                loss, extra = loss + term_loss, {**extra, **term_metrics}
            return loss, (updates, extra)

        (loss, (updates, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        deltas, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {**state, "step": state["step"] + 1, "params": optax.apply_updates(state["params"], deltas),
                     "opt_state": opt_state, **updates}
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"]),
                           **extra}

    return step_fn


def make_eval_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """(variables, batch) → summed loss, top-1 and top-5 hits, and example count over the unmasked examples
    (uint8 images normalised with `mean`/`std`)."""

    def eval_fn(variables, batch):
        if "tokens" in batch:  # text: per-token loss (nats) and next-token top-1/top-5 over every real token
            tokens = batch["tokens"]
            logits = model.apply(variables, tokens[:, :-1], train=False)
            labels = tokens[:, 1:].reshape(-1)
            logits = logits.reshape(labels.shape[0], -1)
            # a whole-split evaluation masks each target (its last window is partial), else each window
            mask = batch["token_mask"].reshape(-1) if "token_mask" in batch else jnp.repeat(batch["mask"],
                                                                                              tokens.shape[1] - 1)
        else:
            logits = model.apply(variables, normalize(batch["images"], mean, std), train=False)
            labels, mask = batch["labels"], batch["mask"]
        return {"loss": jnp.sum(cross_entropy(logits, labels) * mask),
                "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
                "top5": jnp.sum(topk_correct(logits, labels, 5) * mask), "count": jnp.sum(mask)}

    return eval_fn


def evaluate(eval_step: Callable, state: dict[str, Any], loader: data.Loader, mesh) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy over the whole eval split."""
    sums = None
    variables = model_variables(state)
    for batch in loader.epoch(0):
        batch.pop("step")
        out = eval_step(variables, sharding.global_batch(mesh, batch))
        sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = float(sums["count"])
    return {k: round(float(sums[k]) / count, 6) for k in ("loss", "top1", "top5")}


def evaluate_model(config: Any, model: nn.Module, variables: dict[str, Any], split: str | None = None
                   ) -> dict[str, float]:
    """Eval loss, top-1 and top-5 of any model and variables on `split` (default config.data.eval_split) of
    config.data, on one device — for notebooks and scripts that build params without training."""
    devices = jax.devices()[:1]
    mesh = sharding.make_mesh(1, 1, devices)
    loader = data.make_loader(config, split or config.data.eval_split, train=False,
                              batch_size=config.eval_batch_size or config.batch_size)
    return evaluate(jax.jit(make_eval_step(model, loader.mean, loader.std)), dict(variables), loader, mesh)


def model_variables(state: dict[str, Any]) -> dict[str, Any]:
    """The variables a model is applied with (params and, for BatchNorm models, batch_stats)."""
    return {k: state[k] for k in ("params", BATCH_STATS) if k in state}


def host_copy(tree: Any) -> Any:
    """Numpy copies of (possibly sharded, possibly multi-process) arrays, the same on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def export(config: Any, workdir: Path, student: Student, state: dict[str, Any], summary: dict[str, Any],
           main: bool, tokenizer: Any = None) -> None:
    """Write final.json, the trained model directory (with the data's tokenizer, data/tokenize.py), and (for an aux
    model) the gene."""
    variables = host_copy(model_variables(state))
    if jax.process_count() > 1:
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in jax.tree.leaves(variables)))
        print(f"[process {jax.process_index()}] params checksum {digest.hexdigest()}", file=sys.stderr, flush=True)
    model_dir = save_model(workdir / "model", student.model, variables, overwrite=True, origin=student.origin)
    if main:
        save_tokenizer(model_dir, tokenizer)
    summary["model_dir"] = str(model_dir)
    if student.method is not None:
        meta = student.method.meta_from_aux(student.model)
        gene = genes.extract_gene(variables["params"], meta)
        summary["gene"] = str(save_gene(workdir / "gene", gene, overwrite=True))
        summary["gene_params"] = count_params(gene.params)
        logs.info(f"saved the {meta.method} gene ({summary['gene_params']:,} params) to {summary['gene']}")
    if main:
        (workdir / "final.json").write_text(json.dumps(summary, indent=2))
        logs.info(f"final eval: top-1 {summary['top1']:.4f} top-5 {summary['top5']:.4f} loss {summary['loss']:.4f} "
                   f"({summary['train_time_s']}s training)")
