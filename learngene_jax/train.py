"""The one trainer, for every stage: teacher/ancestor training, aux distillation (which ends by saving the
gene), descendant fine-tuning from a gene, and baselines.

Read top to bottom: mesh → data → student and teacher → shardings → optimizer → resume or init →
jitted steps → loop with evals, checkpoints and metrics → final artifacts. It knows no method: the student comes
from a registered builder (`students.py`), the loss from a registered objective plus any registered loss terms the
config turns on, and training phases from registered step variants (`registry.py`).
"""

from __future__ import annotations

import dataclasses
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
from flax.traverse_util import flatten_dict, unflatten_dict

from learngene_jax import checkpointing, data, genes, logs, sharding
from learngene_jax.data.device import normalize, prepare_batch
from learngene_jax.data.mix import mix_batch
from learngene_jax.data.tokenize import save_tokenizer
from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from learngene_jax.distributed import is_main_process
from learngene_jax.errors import ConfigError, UserError, fail, make_dir
from learngene_jax.genes.io import save_gene
from learngene_jax.metrics import MetricWriter, Profile, Progress, eval_curve, first_eval
from learngene_jax.models import compute_dtype
from learngene_jax.models.io import save_model
from learngene_jax.models.llama import check_context, context_limit
from learngene_jax.models.vit import count_params
from learngene_jax.objectives import language  # registers the 'lm' objective
from learngene_jax.objectives.classification import BATCH_STATS, StepInputs, make_objective
from learngene_jax.objectives.losses import cross_entropy, topk_correct
from learngene_jax.objectives.teacher import Teacher, load_teacher
from learngene_jax.optim import build_optimizer, join_params, lr_schedule, split_trainable
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
            fail(ConfigError, f"data.context: {who}: {e}; set --config.data.context={context_limit(model)[0]} or less"
                              + (" (or raise config.model.max_positions)" if own else ""))


def train(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Run `config` in `workdir` (resuming from its latest checkpoint) and return the final metrics."""
    run = set_up(config, workdir)
    init = init_or_resume(run)
    num_params = count_params(init.abstract["params"])
    logs.info(f"[{config.name or 'train'}] {type(run.student.model).__name__} {num_params:,} params "
              f"({run.student.origin}); {len(run.train_data.source)} train / {len(run.eval_data.source)} eval "
              f"examples, {run.num_classes} classes; {config.epochs} epochs x {run.steps_per_epoch} steps, batch "
              f"{config.batch_size}; mesh {dict(run.mesh.shape)} ({config.sharding.strategy})"
              + (f"; teacher {type(run.teacher.model).__name__}" if run.teacher else ""))
    loop = Loop(run, init, PhaseSteps(run, init))
    start_time = time.perf_counter()
    init_results = loop.evaluate_at_start() if config.eval_at_start else None
    loop.train_to_end()
    return finish(run, loop, num_params, init_results, time.perf_counter() - start_time)


@dataclasses.dataclass
class Run:
    """A run before any state exists: its workdir, mesh, loaders, student and frozen teacher, and its length."""

    config: Any
    workdir: Path
    main: bool  # this process writes the workdir's files
    mesh: jax.sharding.Mesh
    data_shards: int  # devices that split each batch
    train_data: data.Loader
    eval_data: data.Loader
    num_classes: int
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    student: Student
    teacher: Teacher | None


def check_sizes(config: Any) -> None:
    """ConfigError unless batch_size ≥ 1, eval_batch_size ≥ 0 (0: batch_size) and max_steps ≥ 0 (0: no cap)."""
    for key, least, note in (("batch_size", 1, ""), ("eval_batch_size", 0, " (0: the batch_size)"),
                             ("max_steps", 0, " (0: no cap)")):
        value = config.get(key, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            fail(ConfigError, f"config.{key} must be a whole number >= {least}{note}, got {value!r}")


def set_up(config: Any, workdir: str | Path) -> Run:
    """Check the config against the workdir and the devices, write config.json, build the mesh, the loaders, the
    student and the teacher."""
    check_sizes(config)
    workdir = make_dir(Path(workdir).expanduser().absolute())
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
    check_accumulation(config, data_shards)
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
    student = build_student(config, num_classes)
    teacher = load_teacher(config.distill, config.data.image_size, num_classes,
                           getattr(train_data.source, "tokenizer", None), dtype=compute_dtype(config.precision))
    if data.is_text(config):
        _check_context(config, student, teacher)
    return Run(config, workdir, main, mesh, data_shards, train_data, eval_data, num_classes, steps_per_epoch,
               total_steps, -(-total_steps // steps_per_epoch), student, teacher)


@dataclasses.dataclass
class Init:
    """The optimizer, the train state (restored or initialised) with its shardings, the frozen step inputs, the
    checkpoints and the input pipeline at the state's step."""

    tx: optax.GradientTransformation
    schedule: optax.Schedule
    step_rng: jax.Array
    abstract: Any  # the state's shapes and dtypes
    state_shardings: Any
    frozen: dict[str, Any]  # step inputs never trained or checkpointed: teacher variables, loss terms' arrays
    loss_terms: dict[str, Callable]
    ckpts: checkpointing.TrainCheckpoints
    state: dict[str, Any]
    batches: Any


def init_or_resume(run: Run) -> Init:
    """Shardings from shapes alone (nothing allocated yet), then the state and the input pipeline's position from
    the latest checkpoint, or a fresh state."""
    config, student, mesh = run.config, run.student, run.mesh
    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    schedule = lr_schedule(config.optim, config.batch_size, run.steps_per_epoch, run.total_steps)
    tx = build_optimizer(config.optim, schedule)
    init_state = state_initializer(student, tx, compute_dtype(config.frozen_precision))
    abstract = jax.eval_shape(init_state, init_rng, student.source)
    state_shardings = train_state_shardings(config, mesh, abstract)
    strategy, rules = config.sharding.strategy, [tuple(r) for r in config.sharding.rules]
    frozen: dict[str, Any] = {}
    if run.teacher is not None:
        frozen["teacher"] = cast_floating(run.teacher.variables, compute_dtype(config.frozen_precision))
    # Loss terms the config turns on (e.g. EWC): their arrays are frozen step inputs like the teacher's.
    loss_terms = {}
    for name, term in LOSS_TERMS.items():
        if (built := term(config, abstract["params"])) is not None:
            frozen[name], loss_terms[name] = built
    frozen = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh, strategy, rules))

    ckpts = checkpointing.TrainCheckpoints(run.workdir / "checkpoints", keep=config.checkpoint.keep)
    latest = ckpts.latest_step()
    if latest is not None:
        target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                        abstract, state_shardings)
        state, _ = ckpts.restore(latest, target)
        batches = ckpts.restore_data(latest, lambda state: run.train_data.steps(run.total_steps, state=state),
                                     lambda: run.train_data.steps(run.total_steps, start=latest))
        logs.info(f"resumed from step {latest} in {ckpts.directory}")
    else:
        state = jax.jit(init_state, out_shardings=state_shardings)(init_rng, student.source)
        batches = run.train_data.steps(run.total_steps)
    return Init(tx, schedule, step_rng, abstract, state_shardings, frozen, loss_terms, ckpts, state, batches)


def state_initializer(student: Student, tx: optax.GradientTransformation, frozen_dtype: Any) -> Callable:
    """(rng, source) → a fresh train state: step, params (the frozen ones, if `student.trainable` leaves some, stored
    in `frozen_dtype`), the optimizer state of the trainable params alone, BatchNorm statistics."""
    def init_state(rng, source):
        variables = student.init(rng, source)
        trained, fixed = split_trainable(variables["params"], student.trainable)
        state = {"step": jnp.zeros((), jnp.int32), "params": join_params(trained, cast_floating(fixed, frozen_dtype)),
                 "opt_state": tx.init(trained)}
        if BATCH_STATS in variables:
            state[BATCH_STATS] = variables[BATCH_STATS]
        return state
    return init_state


def train_state_shardings(config: Any, mesh: jax.sharding.Mesh, abstract: Any) -> Any:
    """The shardings of a train state with these shapes under config.sharding (the step counter replicated)."""
    strategy, rules = config.sharding.strategy, [tuple(r) for r in config.sharding.rules]
    shardings = sharding.tree_shardings(abstract, mesh, strategy, rules)
    shardings["step"] = sharding.replicated(mesh)
    return shardings


def cast_floating(tree: Any, dtype: Any) -> Any:
    """`tree` with its floating-point leaves in `dtype` (frozen weights stored in bf16); other leaves as they are."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def jit_train_step(step_fn: Callable, state_shardings: Any, mesh: jax.sharding.Mesh) -> Callable:
    """`make_train_step`'s function jitted with the state's shardings, the batch split over the data axes, the
    metrics replicated and the old state donated."""
    return jax.jit(step_fn, in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
                   out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


class PhaseSteps:
    """The jitted train and eval steps of each training phase, compiled once per phase: a registered step variant
    (e.g. As-ViT's re-tokenization) trains the model with other fields for some epochs."""

    def __init__(self, run: Run, init: Init):
        self.run, self.init = run, init
        self.phases = training_phases(run.config, run.student.model)
        self._train: dict[tuple | None, Callable] = {}
        self._eval: dict[tuple | None, Callable] = {}

    def phase_of(self, epoch: int) -> tuple | None:
        """The model-field overrides trained in `epoch` (sorted items); None for the model as exported."""
        phase = next((tuple(sorted(o.items())) for start, o in reversed(self.phases) if epoch >= start), None)
        return phase or None

    def model(self, phase: tuple | None) -> nn.Module:
        """The student's model with the phase's fields."""
        model = self.run.student.model
        return model if phase is None else model.clone(**dict(phase))

    def train_step(self, epoch: int) -> Callable:
        """The jitted step of the phase that `epoch` is in."""
        run, init, phase = self.run, self.init, self.phase_of(epoch)
        if phase not in self._train:
            self._train[phase] = jit_train_step(
                make_train_step(run.config, self.model(phase), init.tx, init.schedule, run.teacher, run.num_classes,
                                run.data_shards, init.step_rng, mean=run.train_data.mean, std=run.train_data.std,
                                loss_terms=init.loss_terms, trainable=run.student.trainable),
                init.state_shardings, run.mesh)
        return self._train[phase]

    def eval_step(self, phase: tuple | None) -> Callable:
        """Evaluation of the model with the phase's fields (None: the model as exported)."""
        if phase not in self._eval:
            eval_data = self.run.eval_data
            self._eval[phase] = jax.jit(make_eval_step(self.model(phase), eval_data.mean, eval_data.std),
                                        out_shardings=sharding.replicated(self.run.mesh))
        return self._eval[phase]


class Loop:
    """The step loop: the state, the queued step metrics, the evaluations the schedule asks for, the metric writer,
    the checkpoints."""

    def __init__(self, run: Run, init: Init, steps: PhaseSteps):
        self.run, self.init, self.steps = run, init, steps
        self.writer = MetricWriter(run.workdir, enabled=run.main)
        self.progress = Progress(run.total_steps, run.config.batch_size, enabled=run.main,
                                 label=run.config.name or "train")
        self.state = init.state
        self.step = int(jax.device_get(self.state["step"]))
        self.good_step = self.step  # the newest step whose losses were all finite
        self.pending: list[dict[str, jax.Array]] = []
        self.images_seen = 0
        self.last_eval: tuple[int, dict[str, float]] = (-1, {})  # (step, results) of the exported model's last eval

    def train_to_end(self) -> None:
        """Train from the state's step to the last: save on a preemption notice, every checkpoint.every_steps and at
        the end; the loaders, metrics and checkpoints are closed however it stops."""
        run, ckpts = self.run, self.init.ckpts
        # A profile of `profile_steps` steps after this run's first, compiling, step (TensorBoard's profile plugin).
        profile = Profile(run.workdir / "profile", self.step + 1, run.config.profile_steps)
        try:
            with ckpts.watch_preemption():
                while self.step < run.total_steps:
                    if ckpts.reached_preemption(self.step):  # every process answers alike, so all save this same step
                        self.save()
                        fail(Preempted, f"stopped by a preemption notice (SIGTERM) at step {self.step}; the state is "
                                        f"saved in {ckpts.directory}; run the same command to resume")
                    epoch = self.step // run.steps_per_epoch
                    self.take_step(epoch, profile)
                    if self.step % run.config.log_every_steps == 0 or self.step == run.total_steps:
                        self.flush()
                    if self.step % run.config.checkpoint.every_steps == 0:
                        self.save()
                    self.evaluate_if_due(epoch)
                self.save()
        finally:
            profile.stop()
            run.train_data.close()
            self.writer.close()
            ckpts.close()

    def take_step(self, epoch: int, profile: Profile) -> None:
        """One step on the next batch; its metrics are queued (fetching them would sync the device)."""
        batch = next(self.init.batches)
        if (position := int(batch.pop("step"))) != self.step:  # a restored iterator state that does not fit
            fail(UserError, f"the input pipeline resumed at step {position} instead of {self.step}; rerun with "
                            f"the data settings (data.workers included) of the interrupted run")
        profile.before(self.step)
        self.state, metrics = self.steps.train_step(epoch)(self.state, sharding.global_batch(self.run.mesh, batch),
                                                           self.init.frozen)
        self.step += 1
        profile.after(self.step, self.state)
        self.images_seen += self.run.config.batch_size
        self.pending.append(metrics)

    def flush(self) -> None:
        """Check the queued step metrics (fetching them syncs the device), log them, stop on NaN/Inf."""
        if not self.pending:
            return
        fetched = jax.device_get(self.pending)
        self.pending.clear()
        ckpts = self.init.ckpts
        for offset, m in enumerate(fetched):
            if not math.isfinite(float(m["loss"])):
                bad = self.good_step + offset + 1
                fail(Diverged, f"the loss became {float(m['loss'])} at step {bad}; stopped without saving, the last "
                               f"good checkpoint (step {ckpts.latest_step()}) is kept in {ckpts.directory}; lower "
                               f"optim.lr or set optim.grad_clip, then rerun the same command to resume")
        self.good_step += len(fetched)
        last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        self.writer.write(self.good_step, "train", {**last, "epoch": self.good_step / self.run.steps_per_epoch,
                                                    "images_per_s": self.progress.images_per_s})
        self.progress.update(self.good_step, last["loss"])

    def save(self) -> None:
        """Checkpoint the state and the input pipeline's position at the current step."""
        self.flush()
        self.init.ckpts.save(self.step, self.state, {"step": self.step, "epoch": self.step / self.run.steps_per_epoch},
                             self.init.batches)

    def evaluate_at_start(self) -> dict[str, float] | None:
        """The eval of the initial state (at step 0), or the one an interrupted earlier run recorded."""
        if self.step != 0:
            return first_eval(self.run.workdir)
        results = evaluate(self.steps.eval_step(None), self.state, self.run.eval_data, self.run.mesh)
        self.writer.write(0, "eval", {**results, "epoch": 0})
        self.progress.note(f"at init: eval top-1 {results['top1']:.4f} loss {results['loss']:.4f}")
        return results

    def evaluate_if_due(self, epoch: int) -> None:
        """Evaluate every eval_every_steps inside an epoch, and after every eval_every_epochs-th and the last epoch.
        During a phase (e.g. As-ViT's re-tokenization) the model being trained is evaluated; the final results
        always come from the model as exported."""
        config, step, steps_per_epoch = self.run.config, self.step, self.run.steps_per_epoch
        if step % steps_per_epoch and step < self.run.total_steps:
            if config.eval_every_steps and step % config.eval_every_steps == 0:
                phase, results = self.evaluate_phase(epoch)
                self.writer.write(step, "eval", {**results, "epoch": step / steps_per_epoch,
                                                 **({"phase": dict(phase)} if phase else {})})
            return
        if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == self.run.num_epochs:
            phase, results = self.evaluate_phase(epoch)
            self.last_eval = (step if phase is None else -1, results)
            self.writer.write(step, "eval", {**results, "epoch": epoch + 1,
                                             **({"phase": dict(phase)} if phase else {})})
            self.progress.note(f"epoch {epoch + 1}/{self.run.num_epochs}: eval top-1 {results['top1']:.4f} "
                               f"top-5 {results['top5']:.4f} loss {results['loss']:.4f}"
                               + (f" ({', '.join(f'{k}={v}' for k, v in phase)})" if phase else ""))

    def evaluate_phase(self, epoch: int) -> tuple[tuple | None, dict[str, float]]:
        """(phase, eval results) of the model being trained in `epoch`, after the queued metrics are flushed."""
        self.flush()
        phase = self.steps.phase_of(epoch)
        return phase, evaluate(self.steps.eval_step(phase), self.state, self.run.eval_data, self.run.mesh)


def finish(run: Run, loop: Loop, num_params: int, init_results: dict[str, float] | None,
           train_time: float) -> dict[str, Any]:
    """The final metrics of the model as exported (its last eval if it was at the last step), then final.json, the
    model directory and the gene written (`export`)."""
    config, step = run.config, loop.step
    results = loop.last_eval[1] if loop.last_eval[0] == step else evaluate(
        loop.steps.eval_step(None), loop.state, run.eval_data, run.mesh)
    summary = {"name": config.name, "origin": run.student.origin, "params": num_params, "steps": step,
               "epochs": step / run.steps_per_epoch, "train_time_s": round(train_time, 2),
               "images_per_s": round(loop.images_seen / train_time, 1) if loop.images_seen else None, **results}
    if data.is_text(config):  # the final model's loss on the eval split, nats per token (data.eval_windows=0: all)
        summary["eval_loss"] = results["loss"]
    if init_results is not None:
        summary["init"] = init_results
    if config.eval_every_steps and run.main:
        summary["curve"] = eval_curve(run.workdir, step, run.steps_per_epoch)
    export(config, run.workdir, run.student, loop.state, summary, run.main,
           getattr(run.train_data.source, "tokenizer", None))
    return summary


def training_phases(config: Any, model: nn.Module) -> list[tuple[int, dict[str, Any]]]:
    """(start_epoch, model-field overrides) phases from the registered step variants this config uses (at most
    one); empty overrides mean the model as exported."""
    used = [(name, phases) for name, variant in STEP_VARIANTS.items() if (phases := variant(config, model))]
    if len(used) > 1:
        fail(ConfigError, f"step variants {', '.join(n for n, _ in used)} are all on; one run can use one of them")
    return used[0][1] if used else []


def check_accumulation(config: Any, data_shards: int) -> int:
    """config.optim.accum_steps, checked: a whole number ≥ 1 such that every microbatch splits evenly over the
    `data_shards` devices that split the batch."""
    accum = config.optim.get("accum_steps", 1)
    if not isinstance(accum, int) or isinstance(accum, bool) or accum < 1:
        fail(ConfigError, f"optim.accum_steps must be a whole number >= 1 (1: no accumulation), got {accum!r}")
    if config.batch_size % (accum * data_shards):
        fail(ConfigError, f"batch_size {config.batch_size} does not split into optim.accum_steps={accum} microbatches "
                          f"of a multiple of the {data_shards} devices that split the batch: make batch_size a "
                          f"multiple of {accum * data_shards}")
    return accum


def accumulated_gradients(loss_fn: Callable, params: Any, collections: dict[str, Any], inputs: StepInputs,
                          steps: int) -> tuple[jax.Array, dict[str, Any], dict[str, Any], Any]:
    """(loss, collection updates, metrics, gradients) of `loss_fn(params, collections, inputs) → (loss, (updates,
    metrics))` on the whole batch, computed on `steps` microbatches in a lax.scan when steps > 1: microbatch i holds
    examples i, i + steps, i + 2·steps, … (on every device its share), and each microbatch's loss, metrics and
    gradients count with its share of the batch's `StepInputs.count` — so that the result is the whole batch's mean
    to float rounding. Collections (BatchNorm statistics) pass from one microbatch to the next; dropout draws a key
    per microbatch."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if steps == 1:
        (loss, (updates, extra)), grads = grad_fn(params, collections, inputs)
        return loss, updates, extra, grads

    def split(x):  # (batch, ...) → (steps, batch / steps, ...), strided
        return jnp.swapaxes(x.reshape(x.shape[0] // steps, steps, *x.shape[1:]), 0, 1)

    parts = jax.tree.map(split, (inputs.images, inputs.targets, inputs.labels, inputs.batch))
    counts = jax.vmap(lambda images, targets, labels, batch: StepInputs(images, targets, labels, inputs.rng,
                                                                        batch).count())(*parts)
    shares = counts / jnp.maximum(jnp.sum(counts), 1.0)

    def body(carry, xs):
        grads, collections = carry
        (images, targets, labels, batch), key, share = xs
        (loss, (updates, extra)), g = grad_fn(params, collections, StepInputs(images, targets, labels, key, batch))
        grads = jax.tree.map(lambda total, new: total + share * new, grads, g)
        return (grads, {**collections, **updates}), (share * loss, jax.tree.map(lambda m: share * m, extra))

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, collections), (losses, extras) = jax.lax.scan(
        body, (zeros, collections), (parts, jax.random.split(inputs.rng, steps), shares))
    return jnp.sum(losses), collections, jax.tree.map(lambda m: jnp.sum(m, axis=0), extras), grads


def make_train_step(config: Any, model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    teacher: Teacher | None, num_classes: int, groups: int, rng: jax.Array, *,
                    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                    loss_terms: dict[str, Callable] | None = None,
                    trainable: Callable[[tuple[str, ...]], bool] | None = None) -> Callable:
    """(state, batch, frozen) → (state, metrics): uint8 images normalised with `mean`/`std` (float images are
    taken as normalised) and randomly erased where the batch has boxes, mixup/cutmix, the configured objective
    (teacher on the same mixed images), the active loss terms (name → (params, frozen[name]) → (loss, metrics)),
    gradients (over config.optim.accum_steps microbatches: `accumulated_gradients`), optimizer update. `frozen`
    holds arrays that are inputs of the step but never trained or checkpointed (teacher variables, a loss term's
    arrays). `trainable` (a predicate on param paths, `Student.trainable`): only those params are differentiated
    and updated (the optimizer state covers them alone), and grad_norm is theirs; None: all."""
    aug = config.aug
    objective = make_objective(config, model, teacher)
    loss_terms = loss_terms or {}
    accum = config.optim.get("accum_steps", 1)

    def step_fn(state, batch, frozen):
        step_key = jax.random.fold_in(rng, state["step"])
        r_mix, r_drop = jax.random.split(step_key)
        if "tokens" in batch:  # text: token ids in, the next tokens as labels (objective 'lm')
            tokens = batch["tokens"]
            inputs = StepInputs(tokens[:, :-1], None, tokens[:, 1:], r_drop, batch)
        else:
            r_erase = jax.random.fold_in(step_key, 0xE2A5E)  # its own stream: mixup and dropout draws stay as they were
            images = prepare_batch(batch, mean, std, r_erase)
            images, targets = mix_batch(
                r_mix, images, batch["labels"], num_classes, mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                switch_prob=aug.mixup_switch_prob, prob=aug.mixup_prob, smoothing=aug.label_smoothing, groups=groups)
            inputs = StepInputs(images, targets, batch["labels"], r_drop)
        collections = {k: v for k, v in state.items() if k not in ("step", "params", "opt_state")}
        trained, fixed = split_trainable(state["params"], trainable)

        def loss_fn(trained, collections, inputs):
            params = join_params(trained, fixed)
            loss, updates, extra = objective(params, collections, frozen, inputs)
            for name, term in loss_terms.items():
                term_loss, term_metrics = term(params, frozen[name])
                loss, extra = loss + term_loss, {**extra, **term_metrics}
            return loss, (updates, extra)

        loss, updates, extra, grads = accumulated_gradients(loss_fn, trained, collections, inputs, accum)
        deltas, opt_state = tx.update(grads, state["opt_state"], trained)
        params = join_params(optax.apply_updates(trained, deltas), fixed)
        new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state, **updates}
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"]),
                           **extra}

    return step_fn


def make_eval_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """(variables, batch) → summed loss, top-1 and top-5 hits, and example count over the unmasked examples
    (uint8 images normalised with `mean`/`std`)."""

    def eval_fn(variables, batch):
        if "tokens" in batch:  # text: per-token loss (nats) and next-token top-1/top-5 over every real token
            tokens = batch["tokens"]
            logits = model.apply(variables, tokens[:, :-1], train=False, **language.document_inputs(batch))
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


def with_source_frozen(variables: dict[str, Any], student: Student) -> dict[str, Any]:
    """`variables` whose frozen params (those `student.trainable` leaves out) are the arrays the student started
    from, as they were read: the train state may store them in bf16 (config.frozen_precision), and what a LoRA run
    exports (its model directory, a PEFT adapter) goes with the base it was given, not with a rounded copy."""
    source = student.source
    if student.trainable is None or not isinstance(source, dict) or "params" not in source:
        return variables
    trained, fixed = split_trainable(variables["params"], student.trainable)
    original = flatten_dict(split_trainable(source["params"], student.trainable)[1])
    fixed = {k: np.asarray(original[k]) if k in original and np.shape(original[k]) == np.shape(v) else v
             for k, v in flatten_dict(fixed).items()}
    return {**variables, "params": join_params(trained, unflatten_dict(fixed))}


def export(config: Any, workdir: Path, student: Student, state: dict[str, Any], summary: dict[str, Any],
           main: bool, tokenizer: Any = None) -> None:
    """Write final.json, the trained model directory (with the data's tokenizer, data/tokenize.py), and (for an aux
    model) the gene."""
    variables = with_source_frozen(host_copy(model_variables(state)), student)
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
