"""`train-step`: one training step of the trainer against the same step in PyTorch (timm models,
torch.optim.AdamW, the official losses; eager, and `torch.compile` with `--compile`); also the device, precision
and FLOP handling that `lm-train-step` shares."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from learngene_jax.bench.runner import jax_cache, jax_device, step_row, time_calls
from learngene_jax.errors import UserError, fail

if TYPE_CHECKING:
    import jax


VIT_SIZES = ("vit_ti", "vit_s", "vit_b")
# Dense bf16 peak of the GPUs the device machines lend (TFLOP/s), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def check(args: argparse.Namespace) -> None:
    """A UserError for a student size, image size or precision the benchmark does not run."""
    if args.model not in VIT_SIZES:
        fail(UserError, f"--model must be one of {', '.join(VIT_SIZES)} (the student's size), got {args.model!r}")
    if args.img % args.patch:
        fail(UserError, f"--img {args.img} is not a multiple of --patch {args.patch}")
    check_precision(args)


def check_precision(args: argparse.Namespace) -> None:
    """A UserError for bf16 on the CPU."""
    if args.device == "cpu" and args.precision == "bf16":
        fail(UserError, "bf16 is for GPUs here (on CPU XLA emulates it slowly): drop --precision or use --device gpu")


def frameworks(args: argparse.Namespace) -> list[str]:
    """JAX, then PyTorch eager (and torch.compile with --compile) unless --skip-torch."""
    if args.skip_torch:
        return ["jax"]
    return ["jax", "torch"] + (["torch_compile"] if args.compile else [])


def _student(args: argparse.Namespace, dtype: Any = None) -> Any:
    """The Flax student (TLEG aux for `--stage aux`, else a plain ViT); also read by the torch twin for its size."""
    from learngene_jax.models import create_model

    common = dict(image_size=args.img, patch_size=args.patch, num_classes=args.classes, scan_layers=args.scan,
                  **({"dtype": dtype} if dtype is not None else {}))
    if args.stage == "aux":
        return create_model(f"tleg_aux_{args.model.split('_')[1]}", depth=args.depth, **common)
    return create_model(args.model, depth=args.depth, **common)


def _random_batch(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The same uint8 images (B, H, W, 3) and labels in every framework's process."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (args.batch, args.img, args.img, 3), dtype=np.uint8),
            rng.integers(0, args.classes, args.batch).astype(np.int32))


def _normalised(images: np.ndarray) -> np.ndarray:
    """uint8 → float32 normalised with ImageNet's mean and std, as DeiT's host pipeline hands torch its batches."""
    from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return ((images.astype(np.float32) / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).astype(
        np.float32)


def _peak_tflops(args: argparse.Namespace, device_name: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None) if args.device == "gpu" else None


def _jax_train_step(args: argparse.Namespace, device: jax.Device) -> tuple[Callable[[], None], float]:
    """The trainer's own jitted step on random data, and its FLOPs (XLA's count)."""
    import jax
    import jax.numpy as jnp

    from learngene_jax.config_lib import base_config
    from learngene_jax.models import create_model
    from learngene_jax.objectives.teacher import Teacher
    from learngene_jax.optim import build_optimizer, lr_schedule
    from learngene_jax.train import make_train_step

    jax_cache()
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    cfg = base_config()
    cfg.optim.update(dict(scale_lr=False, warmup_epochs=0))
    model = _student(args, dtype)
    teacher = None
    if args.stage == "aux":
        teacher_model = create_model(args.teacher, image_size=args.img, num_classes=args.classes, dtype=dtype)
        x0 = jnp.zeros((1, args.img, args.img, 3))
        teacher = Teacher(teacher_model, jax.device_put(jax.jit(teacher_model.init)(jax.random.key(1), x0), device))
        cfg.distill.update(dict(type="soft", alpha=1.0, temperature=1.0))
    schedule = lr_schedule(cfg.optim, args.batch, 100, 100)
    tx = build_optimizer(cfg.optim, schedule)
    images, labels = _random_batch(args)
    batch = jax.device_put({"images": images, "labels": labels}, device)
    # uint8 images, normalised inside the step, as the trainer feeds them
    x0 = jnp.zeros((1, args.img, args.img, 3))
    params = jax.device_put(jax.jit(model.init)(jax.random.key(0), x0)["params"], device)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": jax.jit(tx.init)(params)}
    frozen = {"teacher": teacher.variables} if teacher is not None else {}
    step_fn = make_train_step(cfg, model, tx, schedule, teacher, args.classes, 1, jax.random.key(2))
    run, flops, _ = compiled_step(step_fn, state, batch, frozen)
    return run, flops


def compiled_step(step_fn: Callable, state: dict[str, Any], batch: dict[str, Any], frozen: dict[str, Any]
                   ) -> tuple[Callable[[], None], float, list[Any]]:
    """The trainer's `step_fn` jitted (state donated) and compiled: a call runs one step on the kept state until its
    loss is ready; XLA's FLOP count; the losses of the steps run so far."""
    import jax

    compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batch, frozen).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    holder, losses = {"state": state}, []

    def run() -> None:
        holder["state"], metrics = compiled(holder["state"], batch, frozen)
        losses.append(metrics["loss"].block_until_ready())

    return run, float(cost.get("flops", 0.0)), losses


def _torch_train_step(args: argparse.Namespace, compile_model: bool) -> Callable[[], None]:
    """The same step in PyTorch: timm ViT (and LeViT teacher), AdamW with DeiT's no-decay groups, the official loss.

    For `--stage aux` the student is timm's plain ViT of the aux depth: the TLEG aux computes the same matmuls,
    plus θ_B + c·θ_A per layer, which is negligible next to them.
    """
    import torch
    import torch.nn.functional as F

    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    dev = "cuda" if args.device == "gpu" else "cpu"
    model = _student(args)
    student = timm.models.vision_transformer.VisionTransformer(
        img_size=args.img, patch_size=args.patch, embed_dim=model.width, depth=args.depth, num_heads=model.num_heads,
        mlp_ratio=4, qkv_bias=True, class_token=False, global_pool="avg", fc_norm=True,
        num_classes=args.classes).to(dev).train()
    decay = [p for n, p in student.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in student.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-4, betas=(0.9, 0.999), eps=1e-8)
    teacher = None
    if args.stage == "aux":
        teacher = timm.create_model(args.teacher, pretrained=False, img_size=args.img,
                                    num_classes=args.classes).to(dev).eval()
    images, labels = _random_batch(args)
    x = torch.from_numpy(np.ascontiguousarray(_normalised(images).transpose(0, 3, 1, 2))).to(dev)
    y = torch.from_numpy(labels.astype(np.int64)).to(dev)
    targets = F.one_hot(y, args.classes).float()
    forward = torch.compile(student) if compile_model else student

    def loss_fn() -> torch.Tensor:
        logits = forward(x)
        if teacher is None:  # timm SoftTargetCrossEntropy on (smoothed/mixed) one-hot targets
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        with torch.no_grad():
            teacher_logits = teacher(x)
        # DeiT soft distillation, T = 1, alpha = 1: KL summed / (batch * classes)
        return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="sum",
                        log_target=True) / logits.numel()

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(args):
            loss = loss_fn()
        loss.backward()
        opt.step()
        sync()

    return step


def autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """torch's bf16 autocast for `--precision bf16` on the GPU, else a context that does nothing."""
    import torch

    if args.precision == "bf16" and args.device == "gpu":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def framework_device(args: argparse.Namespace, framework: str) -> tuple[str, Any]:
    """(the device's name for the row, the JAX device) for JAX; (name, None) for PyTorch, checked to have CUDA for
    `--device gpu` and given every core on the CPU, as XLA's CPU client uses."""
    if framework == "jax":
        device = jax_device(args.device)
        return (args.device if args.device == "cpu" else device.device_kind), device
    import torch

    if args.device == "gpu" and not torch.cuda.is_available():
        fail(UserError, "torch has no CUDA here: pass --skip-torch to time JAX alone")
    if args.device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        return args.device, None
    return torch.cuda.get_device_name(), None


def step_fields(args: argparse.Namespace, name: str, flops: float | None) -> dict[str, Any]:
    """What every train-step row carries besides its sizes: the device, precision, CPU threads, FLOPs, peak."""
    return dict(device=name, precision=args.precision,
                threads=len(os.sched_getaffinity(0)) if args.device == "cpu" else None,
                step_gflop=None if flops is None else round(flops / 1e9, 2), peak_tflops=_peak_tflops(args, name))


def run_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Time `framework`'s train step in this process; its row with the FLOPs."""
    name, device = framework_device(args, framework)
    flops = None
    if framework == "jax":
        step, flops = _jax_train_step(args, device)
    else:
        step = _torch_train_step(args, compile_model=framework == "torch_compile")
    seconds = time_calls(step, args.steps, args.warmup)
    return step_row(framework, seconds, args.batch, model=args.model, stage=args.stage, depth=args.depth,
                    img=args.img, patch=args.patch, **step_fields(args, name, flops))


def with_mfu(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the JAX step's FLOPs (XLA's count; the PyTorch step does the same math) and the MFU."""
    gflop = next((r["step_gflop"] for r in rows if r["framework"] == "jax"), None)
    for r in rows:
        r["step_gflop"] = gflop
        if gflop and r.get("peak_tflops"):
            r["mfu"] = round(gflop * 1e9 / (r["step_ms"] / 1000) / (r["peak_tflops"] * 1e12), 4)
    return rows
