"""`memory`: the trainer's compiled training step for a language-model config, lowered and compiled ahead of time
from shapes alone (no weights, no data, nothing run), and XLA's memory analysis of it per device: arguments
(state, batch, frozen teacher), temporaries, outputs and generated code — one JSON line.

On a CPU host `--devices N` compiles for N fake CPU devices with the config's mesh and shardings, so that an 8-chip
recipe is sized on a laptop. The figures are the CPU compiler's buffer assignment of the same program: TPU and GPU
compilers fuse and schedule differently (the CPU one upcasts some bf16 work to float32 and has no fused attention
kernel), so read them as an estimate of the accelerator's, not as its measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any

from learngene_jax.config_lib import load_config, with_changes
from learngene_jax.errors import ConfigError, UserError, fail

GIB = 2**30
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_fake_devices(count: int) -> None:
    """Make JAX's CPU backend `count` devices; it must not have started yet (a UserError otherwise)."""
    import jax

    flags = re.sub(rf"{DEVICE_COUNT_FLAG}=\d+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={count}".strip()
    jax.config.update("jax_platforms", "cpu")
    if len(jax.devices()) != count:
        fail(UserError, f"--devices {count}: JAX had already started with {len(jax.devices())} devices in this "
                        f"process; run the command in a fresh process")


def accelerator_config(config: Any) -> Any:
    """`config` as an accelerator runs it: precision and frozen_precision 'auto' become bfloat16 (what 'auto' picks
    on GPUs and TPUs), whatever this host is."""
    changes = {key: "bfloat16" for key in ("precision", "frozen_precision") if config.get(key) == "auto"}
    return with_changes(config, **changes) if changes else config


def teacher_model(config: Any, path: str | None, dtype: Any) -> Any:
    """The teacher's architecture without its weights: `path` (or config.distill.teacher_init) read as a Hugging
    Face directory (config.json) or a model directory (its meta), else config.memory_estimate.teacher (registry
    model fields: what the recipe assumes)."""
    from learngene_jax import checkpointing
    from learngene_jax.convert.hf import model_from_config, read_config
    from learngene_jax.models import create_model, model_from_spec

    path = path or config.distill.teacher_init
    if path:
        directory = Path(path).expanduser()
        if (directory / "config.json").is_file():
            return model_from_config(read_config(directory)).clone(dtype=dtype)
        return model_from_spec(checkpointing.read_meta(directory, "model directory"), dtype=dtype)
    assumed = config.get("memory_estimate", {}).get("teacher")
    if not assumed:
        fail(ConfigError, f"{config.name or 'this config'} distils from a teacher: pass --teacher DIR (a Hugging Face "
                          f"or model directory; only its architecture is read) or set config.memory_estimate.teacher")
    fields = assumed.to_dict() if hasattr(assumed, "to_dict") else dict(assumed)
    return create_model(fields.pop("name"), **fields, dtype=dtype)


def step_memory(config: Any, vocab: int, teacher_path: str | None = None) -> dict[str, Any]:
    """Compile the training step of `config` (objective 'lm', a text corpus) for the devices JAX has, from shapes
    alone, and return its memory analysis per device with the settings that shape it."""
    import jax
    import jax.numpy as jnp

    from learngene_jax import sharding
    from learngene_jax.models import compute_dtype
    from learngene_jax.models.io import abstract_variables
    from learngene_jax.objectives.teacher import Teacher
    from learngene_jax.optim import build_optimizer, lr_schedule
    from learngene_jax.students import build_student
    from learngene_jax.train import (
        cast_floating,
        check_accumulation,
        jit_train_step,
        make_train_step,
        state_initializer,
        train_state_shardings,
    )

    devices = jax.devices()[: config.mesh.num_devices] if config.mesh.num_devices else jax.devices()
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % data_shards:
        fail(ConfigError, f"batch_size {config.batch_size} is not divisible by the {data_shards} devices that split "
                          f"the batch")
    accum = check_accumulation(config, data_shards)
    student = build_student(config, vocab)
    teacher = None
    frozen_dtype = compute_dtype(config.frozen_precision)
    if config.distill.type != "none":
        model = teacher_model(config, teacher_path, compute_dtype(config.precision))
        variables = jax.eval_shape(lambda v: cast_floating(v, frozen_dtype), abstract_variables(model))
        teacher = Teacher(model, variables, vocab=vocab)
    schedule = lr_schedule(config.optim, config.batch_size, 1, max(int(config.max_steps), 1))
    tx = build_optimizer(config.optim, schedule)
    rng = jax.random.key(0)
    abstract = jax.eval_shape(state_initializer(student, tx, frozen_dtype), rng, student.source)
    state_shardings = train_state_shardings(config, mesh, abstract)

    def placed(tree: Any, shardings: Any) -> Any:
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)

    strategy, rules = config.sharding.strategy, [tuple(r) for r in config.sharding.rules]
    frozen = {} if teacher is None else {"teacher": teacher.variables}
    frozen = placed(frozen, sharding.tree_shardings(frozen, mesh, strategy, rules))
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {"tokens": jax.ShapeDtypeStruct((config.batch_size, config.data.context + 1), jnp.int32,
                                            sharding=batch_sharding),
             "mask": jax.ShapeDtypeStruct((config.batch_size,), jnp.float32, sharding=batch_sharding)}
    step_fn = make_train_step(config, student.model, tx, schedule, teacher, vocab, data_shards, rng,
                              trainable=student.trainable)
    start = time.perf_counter()
    compiled = jit_train_step(step_fn, state_shardings, mesh).lower(
        placed(abstract, state_shardings), batch, frozen).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    sizes = {"arguments": stats.argument_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
             "outputs": stats.output_size_in_bytes, "aliased": stats.alias_size_in_bytes,
             "generated_code": stats.generated_code_size_in_bytes}
    # donated state buffers are reused for the new state: what one device holds at the peak of the step
    sizes["total"] = sizes["arguments"] + sizes["temporaries"] + sizes["outputs"] - sizes["aliased"]
    model = student.model
    return {"config": config.name, "devices": len(devices), "mesh": dict(mesh.shape),
            "strategy": config.sharding.strategy, "batch_size": config.batch_size, "accum_steps": accum,
            "sequences_per_device_per_microbatch": config.batch_size // (accum * data_shards),
            "context": config.data.context, "vocab": vocab, "remat": getattr(model, "remat", None),
            "loss_chunk": config.get("loss_chunk", 0), "precision": config.precision,
            "frozen_precision": config.frozen_precision,
            "teacher": None if teacher is None else f"{type(teacher.model).__name__} width {teacher.model.width} depth "
                                                    f"{teacher.model.depth}",
            "per_device_bytes": sizes, "per_device_gib": {k: round(v / GIB, 3) for k, v in sizes.items()},
            "compile_s": round(seconds, 1), "backend": jax.default_backend()}


def check(args: argparse.Namespace) -> None:
    """A UserError for a device count below 0."""
    if args.devices < 0:
        fail(UserError, "--devices must be >= 0 (0: the devices JAX has)")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """`--config`'s step memory on `--devices` fake CPU devices (or the devices JAX has)."""
    if args.devices:
        use_fake_devices(args.devices)
    from learngene_jax import data

    config = accelerator_config(load_config(args.config))
    if config.objective != "lm" or not data.is_text(config):
        fail(UserError, f"bench memory sizes language-model recipes (objective 'lm' on a text corpus); "
                        f"{args.config} has objective {config.objective!r}")
    assumed = config.get("memory_estimate", {})
    vocab = args.vocab or assumed.get("vocab") or config.model.get("vocab_size")
    if not vocab:
        fail(UserError, f"{args.config}: the vocabulary comes from the data's tokenizer; pass --vocab N (or set "
                        f"config.memory_estimate.vocab)")
    return {**step_memory(config, int(vocab), args.teacher), "command_config": args.config}
