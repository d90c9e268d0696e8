"""python -m learngene_jax.bench {forward,train-step} — throughput of JAX next to the PyTorch reference.

`forward`: a jitted eval forward of a model with a timm counterpart (LeViT) against timm's.
`train-step`: one training step of the trainer (loss, gradients, AdamW with the DeiT no-decay rule, and for
`--stage aux` the frozen LeViT teacher on the same images with the DeiT soft-distillation loss) against the
same step in PyTorch (timm models, torch.optim.AdamW, the official losses; eager, and `torch.compile` with
`--compile`).

Frameworks run in one process with the same thread count, their steps interleaved so that load on a shared
machine hits both alike; medians are reported. Prints a table, then one JSON object per framework (last lines).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from learngene_jax import cli, hostmem
from learngene_jax.errors import UserError, fail
from learngene_jax.models import create_model
from learngene_jax.models.levit import VARIANTS as LEVIT_VARIANTS

# Models with a timm counterpart the benchmark can build (name → timm model name).
TIMM_NAMES = {name: name for name in LEVIT_VARIANTS}


def jax_device(kind: str) -> jax.Device:
    """The first JAX device of `kind` ('cpu' or 'gpu')."""
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        fail(UserError, f"JAX sees no {kind} device (available: {', '.join(d.platform for d in jax.devices())})")


def time_interleaved(steps: dict[str, Callable[[], None]], count: int, warmup: int,
                     block: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each step function: `count` timed calls each, in blocks of `block` calls per function
    taken in turn, each block after one untimed call. The untimed call absorbs the previous framework's
    leftovers: PyTorch's OpenMP workers keep spinning for a while after a step and, timed right after it, a JAX
    step on the same cores measured ~40% slower (666 vs 930 ms on 2 cores)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    while any(len(t) < count for t in times.values()):
        for name, step in steps.items():
            step()
            for _ in range(min(block, count - len(times[name]))):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return times


def report(rows: list[dict[str, Any]]) -> None:
    """A table for people, then one JSON object per row for scripts."""
    print(f"{'framework':<10} {'device':<8} {'model':<12} {'batch':>5} {'img':>4} {'step_ms':>9} {'images/s':>9}")
    for r in rows:
        print(f"{r['framework']:<10} {r['device']:<8} {r['model']:<12} {r['batch']:>5} {r['img']:>4} "
              f"{r['step_ms']:>9.1f} {r['images_per_s']:>9.1f}")
    for other in rows[1:]:
        print(f"{rows[0]['framework']}/{other['framework']} step-time ratio: "
              f"{rows[0]['step_ms'] / other['step_ms']:.2f} (< 1: {rows[0]['framework']} is faster)")
    if any(r.get("mfu") for r in rows):
        print("MFU: " + ", ".join(f"{r['framework']} {100 * r['mfu']:.1f}%" for r in rows if r.get("mfu")))
    for r in rows:
        print(json.dumps(r))


def _timm_model(name: str, img: int, variables: dict[str, Any], model: Any, device: str) -> Any:
    """timm's model with the same weights as the Flax one, in eval mode."""
    import torch

    from learngene_jax.convert import levit as convert_levit
    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    ref = timm.create_model(TIMM_NAMES[name], pretrained=False, img_size=img, num_classes=model.num_classes)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in convert_levit.to_timm(model, variables).items()}
    # strict but for the batch counters, which the Flax model does not keep and eval does not read
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        fail(UserError, f"timm {name} and the converted weights disagree: {(missing + unexpected)[:3]}")
    return ref.to("cuda" if device == "gpu" else "cpu").eval()  # eval after loading: timm caches biases


def _forward(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.model not in TIMM_NAMES:
        fail(UserError, f"no timm counterpart for {args.model!r}; benchmarkable: {', '.join(TIMM_NAMES)}")
    device = jax_device(args.device)
    model = create_model(args.model, image_size=args.img)
    images = np.random.default_rng(0).standard_normal((args.batch, args.img, args.img, 3)).astype(np.float32)
    x = jax.device_put(images, device)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])  # placed where its input is
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    steps: dict[str, Callable[[], None]] = {"jax": lambda: apply(variables, x).block_until_ready()}
    threads = len(os.sched_getaffinity(0))
    if not args.skip_timm:
        import torch

        if args.device == "gpu" and not torch.cuda.is_available():
            fail(UserError, "torch has no CUDA here: pass --skip-timm to time JAX alone")
        if args.device == "cpu":
            torch.set_num_threads(threads)  # XLA's CPU client uses every core
        ref = _timm_model(args.model, args.img, jax.device_get(variables), model, args.device)
        x_torch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
            "cuda" if args.device == "gpu" else "cpu")
        sync = torch.cuda.synchronize if args.device == "gpu" else (lambda: None)

        def timm_step() -> None:
            with torch.inference_mode():
                ref(x_torch)
            sync()

        steps["timm"] = timm_step
        with torch.inference_mode():
            want = ref(x_torch).float().cpu().numpy()
        diff = np.abs(np.asarray(apply(variables, x)) - want).max()
        print(f"same weights: max |logit difference| jax vs timm {diff:.1e} (logits up to {np.abs(want).max():.1e})")
    times = time_interleaved(steps, args.steps, args.warmup)
    rows = []
    for framework, seconds in times.items():
        step = statistics.median(seconds)
        rows.append(dict(framework=framework, device=args.device, model=args.model, batch=args.batch, img=args.img,
                         images_per_s=round(args.batch / step, 2), step_ms=round(1000 * step, 2),
                         step_ms_min=round(1000 * min(seconds), 2),
                         steps=args.steps, threads=threads if args.device == "cpu" else None))
    return rows


# Dense bf16 peak of the GPUs the device machines lend (TFLOP/s), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
VIT_SIZES = ("vit_ti", "vit_s", "vit_b")


def _jax_train_step(args: argparse.Namespace, device: jax.Device) -> tuple[Callable[[], None], dict[str, Any]]:
    """The trainer's own jitted step on random data, and what it was built from (for the torch twin)."""
    import jax.numpy as jnp

    from learngene_jax.config_lib import base_config
    from learngene_jax.distill.teacher import Teacher
    from learngene_jax.optim import build_optimizer, lr_schedule
    from learngene_jax.train import make_train_step

    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    size = args.model.split("_")[1]
    common = dict(image_size=args.img, patch_size=args.patch, num_classes=args.classes, dtype=dtype,
                  scan_layers=args.scan)
    cfg = base_config()
    cfg.optim.update(dict(scale_lr=False, warmup_epochs=0))
    teacher = None
    if args.stage == "aux":
        model = create_model(f"tleg_aux_{size}", depth=args.depth, **common)
        teacher_model = create_model(args.teacher, image_size=args.img, num_classes=args.classes, dtype=dtype)
        x0 = jnp.zeros((1, args.img, args.img, 3))
        teacher = Teacher(teacher_model, jax.device_put(jax.jit(teacher_model.init)(jax.random.key(1), x0), device))
        cfg.distill.update(dict(type="soft", alpha=1.0, temperature=1.0))
    else:
        model = create_model(args.model, depth=args.depth, **common)
    schedule = lr_schedule(cfg.optim, args.batch, 100, 100)
    tx = build_optimizer(cfg.optim, schedule)
    rng = np.random.default_rng(0)
    batch = jax.device_put({"images": rng.standard_normal((args.batch, args.img, args.img, 3)).astype(np.float32),
                            "labels": rng.integers(0, args.classes, args.batch).astype(np.int32)}, device)
    params = jax.device_put(jax.jit(model.init)(jax.random.key(0), batch["images"][:1])["params"], device)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": jax.jit(tx.init)(params)}
    frozen = {"teacher": teacher.variables} if teacher is not None else {}
    step = jax.jit(make_train_step(cfg, model, tx, schedule, teacher, args.classes, 1, jax.random.key(2)),
                   donate_argnums=0)
    compiled = step.lower(state, batch, frozen).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    holder = {"state": state}

    def run() -> None:
        holder["state"], metrics = compiled(holder["state"], batch, frozen)
        metrics["loss"].block_until_ready()

    info = dict(model=model, teacher=teacher, params=params, flops=float(cost.get("flops", 0.0)),
                images=np.asarray(jax.device_get(batch["images"])), labels=np.asarray(jax.device_get(batch["labels"])))
    return run, info


def _torch_train_step(args: argparse.Namespace, info: dict[str, Any], compile_model: bool) -> Callable[[], None]:
    """The same step in PyTorch: timm ViT (and LeViT teacher), AdamW with DeiT's no-decay groups, the official loss.

    For `--stage aux` the student is timm's plain ViT of the aux depth: the TLEG aux computes the same matmuls,
    plus θ_B + c·θ_A per layer, which is negligible next to them.
    """
    import torch
    import torch.nn.functional as F

    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    dev = "cuda" if args.device == "gpu" else "cpu"
    model = info["model"]
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
    x = torch.from_numpy(np.ascontiguousarray(info["images"].transpose(0, 3, 1, 2))).to(dev)
    y = torch.from_numpy(info["labels"].astype(np.int64)).to(dev)
    targets = F.one_hot(y, args.classes).float()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16" and dev == "cuda" else None
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
        if amp is not None:
            with amp:
                loss = loss_fn()
        else:
            loss = loss_fn()
        loss.backward()
        opt.step()
        sync()

    return step


def _peak_tflops(args: argparse.Namespace, device: jax.Device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_TFLOPS.items() if k in kind), None) if args.device == "gpu" else None


def _train_step(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.model not in VIT_SIZES:
        fail(UserError, f"--model must be one of {', '.join(VIT_SIZES)} (the student's size), got {args.model!r}")
    if args.img % args.patch:
        fail(UserError, f"--img {args.img} is not a multiple of --patch {args.patch}")
    device = jax_device(args.device)
    if args.device == "cpu" and args.precision == "bf16":
        fail(UserError, "bf16 is for GPUs here (on CPU XLA emulates it slowly): drop --precision or use --device gpu")
    jax_step, info = _jax_train_step(args, device)
    steps: dict[str, Callable[[], None]] = {"jax": jax_step}
    threads = len(os.sched_getaffinity(0))
    if not args.skip_torch:
        import torch

        if args.device == "gpu" and not torch.cuda.is_available():
            fail(UserError, "torch has no CUDA here: pass --skip-torch to time JAX alone")
        if args.device == "cpu":
            torch.set_num_threads(threads)
        steps["torch"] = _torch_train_step(args, info, compile_model=False)
        if args.compile:
            steps["torch_compile"] = _torch_train_step(args, info, compile_model=True)
    times = time_interleaved(steps, args.steps, args.warmup)
    peak = _peak_tflops(args, device)
    rows = []
    for framework, seconds in times.items():
        step = statistics.median(seconds)
        row = dict(framework=framework, device=args.device if args.device == "cpu" else device.device_kind,
                   model=args.model, stage=args.stage, depth=args.depth, batch=args.batch, img=args.img,
                   patch=args.patch, precision=args.precision, images_per_s=round(args.batch / step, 2),
                   step_ms=round(1000 * step, 2), step_ms_min=round(1000 * min(seconds), 2), steps=args.steps,
                   threads=threads if args.device == "cpu" else None, step_gflop=round(info["flops"] / 1e9, 2))
        if peak and info["flops"]:
            row["mfu"] = round(info["flops"] / step / (peak * 1e12), 4)
        rows.append(row)
    return rows


def _expand(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Gene → descendant param tree: `genes.expand` (jitted; results ready) vs the official PyTorch rule
    (`gene_tranfer`: i/L·θ_A + θ_B per layer and sub-layer tensor)."""
    from learngene_jax import genes
    from learngene_jax.genes import tleg
    from learngene_jax.models.vit import count_params

    aux = create_model(f"tleg_aux_{args.size}")
    meta = tleg.meta_from_aux(aux)
    params = jax.jit(aux.init)(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32))["params"]
    gene = genes.extract_gene(params, meta)
    jax.block_until_ready(gene.params)
    steps: dict[str, Callable[[], None]] = {"jax": lambda: jax.block_until_ready(genes.expand(gene, args.depth))}
    if not args.skip_torch:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        pairs = [(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)))
                 for a, b in zip(jax.tree.leaves(gene.params["blocks"]["theta_a"]),
                                 jax.tree.leaves(gene.params["blocks"]["theta_b"]), strict=True)]

        def torch_expand() -> None:
            [i / args.depth * a + b for i in range(args.depth) for a, b in pairs]

        steps["torch"] = torch_expand
    times = time_interleaved(steps, args.steps, args.warmup)
    size = count_params(genes.expand(gene, args.depth))
    return [dict(framework=f, device="cpu", model=f"tleg_aux_{args.size}->L{args.depth}", batch=1, img=224,
                 images_per_s=0.0, step_ms=round(1000 * statistics.median(t), 2),
                 step_ms_min=round(1000 * min(t), 2), descendant_params=size) for f, t in times.items()]


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: one subcommand per thing timed."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--system-malloc", action="store_true", help="run without the transparent huge pages "
                        "that learngene_jax.hostmem gives malloc's big blocks (both frameworks)")
    f = sub.add_parser("forward", parents=[common],
                       help="eval-mode forward pass (jitted JAX vs timm under torch.inference_mode)")
    f.add_argument("--model", required=True, help=f"one of {', '.join(TIMM_NAMES)}")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--img", type=int, default=224)
    f.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    f.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    f.add_argument("--warmup", type=int, default=2, help="untimed rounds after compilation")
    f.add_argument("--skip-timm", action="store_true", help="time JAX alone (no torch needed)")
    f.set_defaults(func=_forward)

    t = sub.add_parser("train-step", parents=[common],
                       help="one training step: the trainer's jitted step vs PyTorch (timm, AdamW)")
    t.add_argument("--model", default="vit_ti", help="student size: vit_ti, vit_s or vit_b")
    t.add_argument("--stage", default="descendant", choices=["descendant", "aux"],
                   help="descendant: a plain ViT fine-tune step; aux: TLEG aux + frozen teacher + soft KD")
    t.add_argument("--depth", type=int, default=12)
    t.add_argument("--img", type=int, default=224)
    t.add_argument("--patch", type=int, default=16)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--classes", type=int, default=1000)
    t.add_argument("--teacher", default="levit_384", help="teacher for --stage aux")
    t.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: compute dtype (GPU), "
                   "params and optimizer state stay float32; torch uses autocast")
    t.add_argument("--scan", action="store_true", help="run the blocks with lax.scan (faster compiles)")
    t.add_argument("--compile", action="store_true", help="also time torch.compile")
    t.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    t.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    t.add_argument("--warmup", type=int, default=2, help="untimed rounds after compilation")
    t.add_argument("--skip-torch", action="store_true", help="time JAX alone (no torch needed)")
    t.set_defaults(func=_train_step)

    e = sub.add_parser("expand", parents=[common],
                       help="time expanding a TLEG gene into a descendant param tree (vs PyTorch)")
    e.add_argument("--size", default="b", choices=["ti", "s", "b"])
    e.add_argument("--depth", type=int, default=12)
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--warmup", type=int, default=2)
    e.add_argument("--skip-torch", action="store_true")
    e.set_defaults(func=_expand)
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse, time, report."""
    args = build_parser().parse_args(argv)
    if args.system_malloc:
        os.environ[hostmem.ENV] = "system"
    if argv is None:  # the command line (a call from Python keeps its process)
        hostmem.reexec_with_huge_pages()  # both frameworks run under it alike
    for name in ("batch", "img", "steps", "depth"):
        if getattr(args, name, 1) < 1:
            fail(UserError, f"--{name} must be >= 1")
    rows = args.func(args)
    malloc = "glibc, huge pages" if hostmem.huge_pages_active() else "as started"
    report([{**row, "malloc": malloc} for row in rows])


if __name__ == "__main__":
    cli.run(main)
