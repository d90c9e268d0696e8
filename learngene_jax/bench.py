"""python -m learngene_jax.bench {forward,train-step,lm-train-step,expand,input} — throughput of JAX next to the PyTorch
reference.

`forward`: a jitted eval forward of a model with a timm counterpart (LeViT) against timm's.
`train-step`: one training step of the trainer (loss, gradients, AdamW with the DeiT no-decay rule, and for
`--stage aux` the frozen LeViT teacher on the same images with the DeiT soft-distillation loss) against the
same step in PyTorch (timm models, torch.optim.AdamW, the official losses; eager, and `torch.compile` with
`--compile`).
`lm-train-step`: one training step of the trainer on a Llama decoder (`--config`'s recipe, the LM demo's by default:
next-token cross-entropy, AdamW, gradient clipping) against Hugging Face transformers' LlamaForCausalLM with the same
weights, tokens and optimizer in PyTorch; tokens/s, and both frameworks' losses at the first and the last step.
`expand`: gene → descendant params against the official PyTorch rule.
`input`: images/s of the host input pipeline (`data.make_loader` with a config's train transform) against timm's
`create_transform` + torch `DataLoader` with the same settings and number of workers, with the CPU cores busy,
the bytes per image sent to the device and the peak RSS of the main and worker processes.

Each framework is timed in its own process (`--framework NAME` runs one), one process at a time, A/B/A/B for
`--rounds` rounds: in one process under load the PyTorch figure once fell to 0.1–0.25× that of an independent
process. Per framework the report gives the median over rounds and the spread (min–max), and the ratio of the
frameworks pair by pair (same round). Prints a table, then one JSON object per framework (last lines).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from learngene_jax import cli, hostmem
from learngene_jax.config_lib import load_config, with_changes
from learngene_jax.data.text import BYTE_VOCAB
from learngene_jax.errors import UserError, fail

if TYPE_CHECKING:
    import jax

    from learngene_jax.models.llama import Llama

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # holds learngene_jax/ (and configs/ in a checkout)
# Frameworks whose process keeps the accelerator; the others see JAX on the CPU only (where it builds weights).
JAX_FRAMEWORKS = ("jax",)
# Dense bf16 peak of the GPUs the device machines lend (TFLOP/s), for MFU.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
VIT_SIZES = ("vit_ti", "vit_s", "vit_b")
MB = 2 ** 20


def timm_names() -> dict[str, str]:
    """Models with a timm counterpart the benchmark can build (name → timm model name)."""
    from learngene_jax.models.levit import VARIANTS

    return {name: name for name in VARIANTS}


def jax_device(kind: str) -> jax.Device:
    """The first JAX device of `kind` ('cpu' or 'gpu')."""
    import jax

    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        fail(UserError, f"JAX sees no {kind} device (available: {', '.join(d.platform for d in jax.devices())})")


def jax_cache() -> None:
    """XLA's persistent compilation cache: a framework's second process (and the timm process, which builds the
    same weights) skips compiles that the timed steps never include anyway."""
    from learngene_jax.main import enable_compilation_cache

    enable_compilation_cache()


def time_calls(step: Callable[[], None], count: int, warmup: int) -> list[float]:
    """Seconds of each of `count` calls of `step`, after one untimed call (compilation, lazy set-up) and `warmup`
    more."""
    for _ in range(1 + warmup):
        step()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


# What one step processes, by throughput field of a step row: the rate is this count over the step time.
PER_STEP: dict[str, Callable[[dict[str, Any]], int]] = {
    "images_per_s": lambda row: row["batch"], "tokens_per_s": lambda row: row["batch"] * row["context"]}


def step_row(framework: str, seconds: list[float], batch: int, rate: str = "images_per_s",
             **fields: Any) -> dict[str, Any]:
    """One process's result: median and fastest step, and the throughput `rate` (a PER_STEP field)."""
    step = statistics.median(seconds)
    row = dict(framework=framework, **fields, batch=batch)
    return {**row, rate: round(PER_STEP[rate](row) / step, 2), "step_ms": round(1000 * step, 2),
            "step_ms_min": round(1000 * min(seconds), 2), "steps": len(seconds)}


# ---------------------------------------------------------------------------------------------------------------
# One process per framework per round.

def _child_env(framework: str) -> dict[str, str]:
    env = dict(os.environ)  # keeps XLA_FLAGS, ...
    # both frameworks run alike: with huge pages for malloc's big blocks where they help (hostmem), unless
    # --system-malloc asks for glibc's defaults
    if os.environ.get(SYSTEM_MALLOC):
        env.pop("GLIBC_TUNABLES", None)
    elif hostmem.can_use_huge_pages():
        env = hostmem.environment_with_huge_pages(env)
    # the same learngene_jax as this process, whatever the working directory
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    if framework not in JAX_FRAMEWORKS:
        env["JAX_PLATFORMS"] = "cpu"  # a PyTorch or input process must not take GPU memory for JAX
        # OpenMP's default active wait spins idle threads; under any other load on the host it made PyTorch's
        # step swing 2.9-11.2 s. Passive waiting is what a shared host needs; a value the user set is kept.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _run_child(argv: list[str], framework: str) -> tuple[dict[str, Any] | None, int, str]:
    """`python -m learngene_jax.bench ARGV --framework FRAMEWORK`: (its JSON row or None, exit code, last error
    line)."""
    proc = subprocess.run([sys.executable, "-m", "learngene_jax.bench", *argv, "--framework", framework],
                          env=_child_env(framework), capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("{"):
        return json.loads(lines[-1]), 0, ""
    errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = errors[-1] if errors else (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else "no output")
    message = next((line for line in reversed(errors) if line.startswith("error: ")), last)
    return None, proc.returncode, message.removeprefix("error: ")


def run_rounds(argv: list[str], frameworks: list[str], rounds: int,
               describe: Callable[[dict[str, Any]], str]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Rows per framework over `rounds` rounds of one process per framework in turn (A/B/A/B), and the failures
    (a framework that fails is not run again)."""
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in frameworks}
    failures: list[tuple[str, int, str]] = []
    for r in range(rounds):
        for framework in frameworks:
            if any(f == framework for f, _, _ in failures):
                continue
            row, code, message = _run_child(argv, framework)
            if row is None:
                failures.append((framework, code, message))
                print(f"round {r + 1}/{rounds} {framework}: failed (exit {code}): {message}", file=sys.stderr)
                continue
            results[framework].append(row)
            print(f"round {r + 1}/{rounds} {framework}: {describe(row)}", file=sys.stderr, flush=True)
    if failures and all(code == 2 for _, code, _ in failures) and not any(results.values()):
        fail(UserError, "; ".join(message for _, _, message in failures))  # the same user error everywhere
    return ({f: rows for f, rows in results.items() if rows},
            [f"{f} failed (exit {code}): {message}" for f, code, message in failures])


def _spread(values: list[float], digits: int = 2) -> list[float]:
    return [round(min(values), digits), round(max(values), digits)]


# How a field of the per-process rows combines over rounds (the timed key itself: median; others: first round's).
OVER_ROUNDS: dict[str, Callable[[list[float]], float]] = {
    "step_ms_min": min, "peak_rss_mb": max, "peak_worker_rss_mb": max, "peak_total_rss_mb": max,
    "cores_busy": statistics.median, "cores_busy_main": statistics.median,
    "cores_busy_workers": statistics.median, "child_processes": max}


def combine(results: dict[str, list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One row per framework: the median of `key` over rounds, its spread and values, and in the first
    framework's row its ratio to each other framework, pair by pair (same round), median and spread."""
    lower_is_better = key == "step_ms"
    rows = []
    for rounds in results.values():
        values = [r[key] for r in rounds]
        row = {**rounds[0], key: round(statistics.median(values), 2), f"{key}_spread": _spread(values),
               f"{key}_rounds": values, "rounds": len(rounds)}
        row.update({k: round(how([r[k] for r in rounds]), 2) for k, how in OVER_ROUNDS.items() if k in row})
        if key == "step_ms":
            for rate, count in PER_STEP.items():
                if row.get(rate):
                    row[rate] = round(count(row) * 1000 / row["step_ms"], 2)
        row.pop("check", None)
        rows.append(row)
    first = next(iter(results), None)
    for framework in list(results)[1:]:
        ratios = [a[key] / b[key] for a, b in zip(results[first], results[framework], strict=False)]
        name = "step_time_ratio" if lower_is_better else f"{key}_ratio"
        rows[0][f"{name}_vs_{framework}"] = round(statistics.median(ratios), 3)
        rows[0][f"{name}_vs_{framework}_spread"] = _spread(ratios, 3)
    return rows


def _ratio_lines(rows: list[dict[str, Any]], key: str) -> list[str]:
    lower_is_better = key == "step_ms"
    first, lines = rows[0]["framework"], []
    name = "step_time_ratio" if lower_is_better else f"{key}_ratio"
    for other in rows[1:]:
        median = rows[0].get(f"{name}_vs_{other['framework']}")
        if median is None:
            continue
        low, high = rows[0][f"{name}_vs_{other['framework']}_spread"]
        better = "< 1" if lower_is_better else "> 1"
        what = "step-time" if lower_is_better else "images/s"
        lines.append(f"{first}/{other['framework']} {what} ratio: {median:.2f} (pairs {low:.2f}–{high:.2f}, "
                     f"{rows[0]['rounds']} rounds; {better}: {first} is faster)")
    return lines


def report_steps(rows: list[dict[str, Any]]) -> None:
    """Step benchmarks: a table for people, ratio and MFU lines, then one JSON object per framework."""
    rate, size, size_label = ("tokens_per_s", "context", "ctx") if "tokens_per_s" in rows[0] else (
        "images_per_s", "img", "img")
    print(f"{'framework':<14} {'device':<16} {'model':<12} {'batch':>5} {size_label:>5} {'step_ms':>9} "
          f"{'(min–max over rounds)':>22} {rate.replace('_per_s', '/s'):>10}")
    for r in rows:
        low, high = r["step_ms_spread"]
        spread = f"{low:.1f}–{high:.1f}"
        print(f"{r['framework']:<14} {r['device']:<16} {r['model']:<12} {r['batch']:>5} {r[size]:>5} "
              f"{r['step_ms']:>9.1f} {spread:>22} {r[rate]:>10.1f}")
    for line in _ratio_lines(rows, "step_ms"):
        print(line)
    if any(r.get("mfu") for r in rows):
        print("MFU: " + ", ".join(f"{r['framework']} {100 * r['mfu']:.1f}%" for r in rows if r.get("mfu")))
    for r in rows:
        print(json.dumps(r))


def report_input(rows: list[dict[str, Any]]) -> None:
    """The input benchmark: a table for people, the ratio line, then one JSON object per framework."""
    print(f"{'framework':<14} {'workers':>7} {'images/s':>9} {'(min–max)':>15} {'cores busy':>10} "
          f"{'bytes/image':>11} {'peak RSS main / worker MB':>26}")
    for r in rows:
        low, high = r["images_per_s_spread"]
        spread, rss = f"{low:.1f}–{high:.1f}", f"{r['peak_rss_mb']:.0f} / {r['peak_worker_rss_mb']:.0f}"
        print(f"{r['framework']:<14} {r['workers']:>7} {r['images_per_s']:>9.1f} {spread:>15} "
              f"{r['cores_busy']:>10.2f} {r['bytes_per_image']:>11,.0f} {rss:>26}")
    for line in _ratio_lines(rows, "images_per_s"):
        print(line)
    for note in dict.fromkeys(r["note"] for r in rows if r.get("note")):
        print(f"note: {note}")
    for r in rows:
        print(json.dumps(r))


# ---------------------------------------------------------------------------------------------------------------
# forward

def _forward_check(args: argparse.Namespace) -> None:
    names = timm_names()
    if args.model not in names:
        fail(UserError, f"no timm counterpart for {args.model!r}; benchmarkable: {', '.join(names)}")


def _forward_frameworks(args: argparse.Namespace) -> list[str]:
    return ["jax"] + ([] if args.skip_timm else ["timm"])


def _forward_variables(args: argparse.Namespace, images: np.ndarray, device: jax.Device) -> tuple[Any, Any]:
    import jax

    from learngene_jax.models import create_model

    model = create_model(args.model, image_size=args.img)
    x = jax.device_put(images[:1], device)
    return model, jax.jit(model.init)(jax.random.key(0), x)  # placed where its input is


def _timm_model(name: str, img: int, variables: dict[str, Any], model: Any, device: str) -> Any:
    """timm's model with the same weights as the Flax one, in eval mode."""
    import torch

    from learngene_jax.convert import levit as convert_levit
    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    ref = timm.create_model(timm_names()[name], pretrained=False, img_size=img, num_classes=model.num_classes)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in convert_levit.to_timm(model, variables).items()}
    # strict but for the batch counters, which the Flax model does not keep and eval does not read
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        fail(UserError, f"timm {name} and the converted weights disagree: {(missing + unexpected)[:3]}")
    return ref.to("cuda" if device == "gpu" else "cpu").eval()  # eval after loading: timm caches biases


def _forward_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    import jax

    jax_cache()
    images = np.random.default_rng(0).standard_normal((args.batch, args.img, args.img, 3)).astype(np.float32)
    threads = len(os.sched_getaffinity(0))
    fields: dict[str, Any] = dict(device=args.device, model=args.model, img=args.img)
    if framework == "jax":
        device = jax_device(args.device)
        model, variables = _forward_variables(args, images, device)
        x = jax.device_put(images, device)
        apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
        seconds = time_calls(lambda: apply(variables, x).block_until_ready(), args.steps, args.warmup)
    else:  # timm, with the Flax model's weights (built by JAX on the CPU) for a parity check
        import torch

        if args.device == "gpu" and not torch.cuda.is_available():
            fail(UserError, "torch has no CUDA here: pass --skip-timm to time JAX alone")
        if args.device == "cpu":
            torch.set_num_threads(threads)  # XLA's CPU client uses every core
        model, variables = _forward_variables(args, images, jax.devices("cpu")[0])
        ref = _timm_model(args.model, args.img, jax.device_get(variables), model, args.device)
        x_torch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
            "cuda" if args.device == "gpu" else "cpu")
        sync = torch.cuda.synchronize if args.device == "gpu" else (lambda: None)

        def step() -> None:
            with torch.inference_mode():
                ref(x_torch)
            sync()

        seconds = time_calls(step, args.steps, args.warmup)
        # after timing: XLA's CPU threads keep spinning for a while after a run and slowed timm's steps 3x
        with torch.inference_mode():
            want = ref(x_torch).float().cpu().numpy()
        got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
        diff = np.abs(np.asarray(got) - want).max()
        fields["check"] = f"max |logit difference| jax vs timm {diff:.1e} (logits up to {np.abs(want).max():.1e})"
    return step_row(framework, seconds, args.batch, **fields, threads=threads if args.device == "cpu" else None)


# ---------------------------------------------------------------------------------------------------------------
# train-step

def _train_step_check(args: argparse.Namespace) -> None:
    if args.model not in VIT_SIZES:
        fail(UserError, f"--model must be one of {', '.join(VIT_SIZES)} (the student's size), got {args.model!r}")
    if args.img % args.patch:
        fail(UserError, f"--img {args.img} is not a multiple of --patch {args.patch}")
    _check_precision(args)


def _check_precision(args: argparse.Namespace) -> None:
    if args.device == "cpu" and args.precision == "bf16":
        fail(UserError, "bf16 is for GPUs here (on CPU XLA emulates it slowly): drop --precision or use --device gpu")


def _train_step_frameworks(args: argparse.Namespace) -> list[str]:
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
    run, flops, _ = _compiled_step(step_fn, state, batch, frozen)
    return run, flops


def _compiled_step(step_fn: Callable, state: dict[str, Any], batch: dict[str, Any], frozen: dict[str, Any]
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
        with _autocast(args):
            loss = loss_fn()
        loss.backward()
        opt.step()
        sync()

    return step


def _autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """torch's bf16 autocast for `--precision bf16` on the GPU, else a context that does nothing."""
    import torch

    if args.precision == "bf16" and args.device == "gpu":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _framework_device(args: argparse.Namespace, framework: str) -> tuple[str, Any]:
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


def _step_fields(args: argparse.Namespace, name: str, flops: float | None) -> dict[str, Any]:
    """What every train-step row carries besides its sizes: the device, precision, CPU threads, FLOPs, peak."""
    return dict(device=name, precision=args.precision,
                threads=len(os.sched_getaffinity(0)) if args.device == "cpu" else None,
                step_gflop=None if flops is None else round(flops / 1e9, 2), peak_tflops=_peak_tflops(args, name))


def _train_step_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    name, device = _framework_device(args, framework)
    flops = None
    if framework == "jax":
        step, flops = _jax_train_step(args, device)
    else:
        step = _torch_train_step(args, compile_model=framework == "torch_compile")
    seconds = time_calls(step, args.steps, args.warmup)
    return step_row(framework, seconds, args.batch, model=args.model, stage=args.stage, depth=args.depth,
                    img=args.img, patch=args.patch, **_step_fields(args, name, flops))


def _with_mfu(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the JAX step's FLOPs (XLA's count; the PyTorch step does the same math) and the MFU."""
    gflop = next((r["step_gflop"] for r in rows if r["framework"] == "jax"), None)
    for r in rows:
        r["step_gflop"] = gflop
        if gflop and r.get("peak_tflops"):
            r["mfu"] = round(gflop * 1e9 / (r["step_ms"] / 1000) / (r["peak_tflops"] * 1e12), 4)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# lm-train-step

LM_CONFIG = "configs/lm_demo.py"
LM_DEPTH = 6  # the LM demo's teacher; its config leaves the depth to each stage
LM_SIZES = {"width": "model.width", "heads": "model.num_heads", "kv_heads": "model.num_kv_heads",
            "mlp_dim": "model.mlp_dim", "batch": "batch_size", "context": "data.context"}  # option → config key


def lm_config(args: argparse.Namespace) -> Any:
    """`--config`'s recipe (decoder, batch, context, optimizer) with the command line's sizes, the lm objective
    without a teacher and a constant learning rate (the step's cost does not depend on the rate)."""
    config = load_config(args.config)
    if config.model.get("name") != "llama":
        fail(UserError, f"{args.config} trains model.name={config.model.get('name')!r}; lm-train-step times the "
                        f"llama decoder (against transformers' LlamaForCausalLM)")
    sizes = {key: getattr(args, option) for option, key in LM_SIZES.items() if getattr(args, option) is not None}
    return with_changes(config, **sizes, **{"model.depth": args.depth, "model.vocab_size": args.vocab,
                                            "objective": "lm", "distill.type": "none", "optim.schedule": "constant"})


def _lm_check(args: argparse.Namespace) -> None:
    _check_precision(args)
    model = lm_config(args).model
    if model.num_heads % model.num_kv_heads:
        fail(UserError, f"--heads {model.num_heads} is not a multiple of --kv-heads {model.num_kv_heads}")


def lm_model(config: Any, dtype: Any = None) -> Llama:
    """The Flax Llama of `config.model` for windows of `config.data.context` tokens."""
    import jax.numpy as jnp

    from learngene_jax.models.llama import Llama

    arch = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    return Llama(**arch, max_positions=config.data.context, dtype=dtype or jnp.float32)


def lm_params(model: Llama) -> dict[str, Any]:
    """The decoder's initial params as numpy, built on the CPU in every framework's process (the same numbers)."""
    import jax

    tokens = jax.device_put(np.zeros((1, 8), np.int32), jax.devices("cpu")[0])
    return jax.device_get(jax.jit(model.init)(jax.random.key(0), tokens)["params"])  # placed where its input is


def lm_tokens(config: Any) -> np.ndarray:
    """The same token windows (batch, context + 1) int32 in every framework's process: inputs and their
    next-token targets, as the text loader gives them."""
    shape = (config.batch_size, config.data.context + 1)
    return np.random.default_rng(0).integers(0, config.model.vocab_size, shape).astype(np.int32)


def lm_train_flops(model: Llama, batch: int, context: int) -> float:
    """FLOPs of one training step by the usual count (Kaplan et al.; PaLM's MFU): 6 per token per weight of each
    matmul (the embedding lookup has none), plus 12·context·heads·head_dim per token per layer for attention's two
    matmuls over every position, masked ones included. Not XLA's cost analysis: it counts the body of a `lax.scan`
    once, not once per layer, for a decoder that is not unrolled."""
    per_layer = sum(int(np.prod(shape)) for name, shape in model.layer_shapes().items() if not name.endswith("norm"))
    tokens = batch * context
    return (6.0 * tokens * (model.depth * per_layer + model.width * model.vocab_size)
            + 12.0 * tokens * model.depth * context * model.num_heads * model.hd)


def _jax_lm_step(args: argparse.Namespace, device: jax.Device) -> tuple[Callable[[], None], list[Any]]:
    """The trainer's jitted step on the decoder and token windows, and the losses of the steps run so far."""
    import jax
    import jax.numpy as jnp

    from learngene_jax.optim import build_optimizer, lr_schedule
    from learngene_jax.train import make_train_step

    jax_cache()
    config = lm_config(args)
    model = lm_model(config, jnp.bfloat16 if args.precision == "bf16" else jnp.float32)
    schedule = lr_schedule(config.optim, config.batch_size, 1, 1)
    tx = build_optimizer(config.optim, schedule)
    params = jax.device_put(lm_params(model), device)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": jax.jit(tx.init)(params)}
    batch = jax.device_put({"tokens": lm_tokens(config)}, device)
    step_fn = make_train_step(config, model, tx, schedule, None, model.vocab_size, 1, jax.random.key(2))
    run, _, losses = _compiled_step(step_fn, state, batch, {})
    return run, losses


def _torch_decayed(params: dict[str, Any]) -> set[str]:
    """transformers' names of the weights the trainer's AdamW decays (optim.decay_mask through the conversion
    table)."""
    import jax

    from learngene_jax.convert import hf
    from learngene_jax.optim import decay_mask

    mask = jax.tree.map(lambda decayed, p: np.broadcast_to(decayed, np.shape(p)), decay_mask(params), params)
    return {name for name, decayed in hf.flax_to_torch(mask, hf.LLAMA_RULES).items() if decayed.all()}


def _torch_lm_step(args: argparse.Namespace, compile_model: bool) -> tuple[Callable[[], None], list[Any]]:
    """The same step in PyTorch: transformers' LlamaForCausalLM built offline from the Flax decoder's config and
    weights (convert/hf.py), next-token cross-entropy in float32, gradient clipping and torch.optim.AdamW with the
    trainer's settings on the weights the trainer decays; and the losses of the steps run so far."""
    import torch
    import torch.nn.functional as F

    from learngene_jax.convert import hf
    from learngene_jax.optim import peak_lr
    from learngene_jax.torch_ref import import_transformers

    transformers = import_transformers()
    dev = "cuda" if args.device == "gpu" else "cpu"
    config = lm_config(args)
    model, opt_config = lm_model(config), config.optim
    params = lm_params(model)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf.hf_config(model), use_cache=False))
    ref.load_state_dict({k: torch.tensor(v) for k, v in hf.flax_to_torch(params, hf.LLAMA_RULES).items()},
                        strict=True)
    ref = ref.to(dev).train()
    decayed = _torch_decayed(params)
    groups = [{"params": [p for n, p in ref.named_parameters() if (n in decayed) == decay],
               "weight_decay": opt_config.weight_decay if decay else 0.0} for decay in (True, False)]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=peak_lr(opt_config, config.batch_size),
                            betas=(opt_config.b1, opt_config.b2), eps=opt_config.eps)
    tokens = torch.from_numpy(lm_tokens(config).astype(np.int64)).to(dev)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].reshape(-1)
    forward = torch.compile(ref) if compile_model else ref
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    losses = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(args):
            logits = forward(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets)  # as objectives/language.py: in float32
        loss.backward()
        if opt_config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), opt_config.grad_clip)
        opt.step()
        sync()
        losses.append(loss.detach())

    return step, losses


def _lm_train_step_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    name, device = _framework_device(args, framework)
    if framework == "jax":
        step, losses = _jax_lm_step(args, device)
    else:
        step, losses = _torch_lm_step(args, compile_model=framework == "torch_compile")
    seconds = time_calls(step, args.steps, args.warmup)
    config = lm_config(args)
    model = lm_model(config)
    flops = lm_train_flops(model, config.batch_size, config.data.context)
    return step_row(framework, seconds, config.batch_size, rate="tokens_per_s", model="llama", depth=model.depth,
                    width=model.width, heads=model.num_heads, kv_heads=model.num_kv_heads, mlp_dim=model.mlp_dim,
                    vocab=model.vocab_size, context=config.data.context, loss_step0=float(losses[0]),
                    last_step=len(losses) - 1, loss_last=float(losses[-1]), **_step_fields(args, name, flops))


def same_loss_line(results: dict[str, list[dict[str, Any]]]) -> str:
    """The frameworks' losses at step 0 (the same weights and tokens) and at the last step (after as many updates
    of the same optimizer), first round, and their largest difference."""
    first = [r[0] for r in results.values()]
    diff = max(abs(r[k] - first[0][k]) for r in first for k in ("loss_step0", "loss_last"))
    losses = ", ".join(f"{r['framework']} {r['loss_step0']:.6f} / {r['loss_last']:.6f}" for r in first)
    return f"loss at step 0 / step {first[0]['last_step']}: {losses} (max |difference| {diff:.1e})"


# ---------------------------------------------------------------------------------------------------------------
# expand

def _expand_frameworks(args: argparse.Namespace) -> list[str]:
    return ["jax"] + ([] if args.skip_torch else ["torch"])


def _expand_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Gene → descendant param tree: `genes.expand` (jitted; results ready) vs the official PyTorch rule
    (`gene_tranfer`: i/L·θ_A + θ_B per layer and sub-layer tensor)."""
    import jax

    from learngene_jax import genes
    from learngene_jax.methods.tleg import gene as tleg
    from learngene_jax.models import create_model
    from learngene_jax.models.vit import count_params

    jax_cache()
    aux = create_model(f"tleg_aux_{args.size}")
    meta = tleg.meta_from_aux(aux)
    params = jax.jit(aux.init)(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32))["params"]
    gene = genes.extract_gene(params, meta)
    jax.block_until_ready(gene.params)
    size = count_params(genes.expand(gene, args.depth))
    if framework == "jax":
        seconds = time_calls(lambda: jax.block_until_ready(genes.expand(gene, args.depth)), args.steps, args.warmup)
    else:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        pairs = [(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)))
                 for a, b in zip(jax.tree.leaves(gene.params["blocks"]["theta_a"]),
                                 jax.tree.leaves(gene.params["blocks"]["theta_b"]), strict=True)]

        def torch_expand() -> None:
            [i / args.depth * a + b for i in range(args.depth) for a, b in pairs]

        seconds = time_calls(torch_expand, args.steps, args.warmup)
    row = step_row(framework, seconds, 1, device="cpu", model=f"tleg_aux_{args.size}->L{args.depth}", img=224,
                   descendant_params=size)
    return {**row, "images_per_s": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# input

INPUT_FRAMEWORKS = ("learngene_jax", "timm")
SYSTEM_MALLOC = "LEARNGENE_BENCH_SYSTEM_MALLOC"  # set by --system-malloc for the timed processes
DEFAULT_CONFIG = "configs/tleg_s.py"


def _folder(args: argparse.Namespace) -> Path:
    kind, _, path = args.data.partition(":")
    if kind != "folder" or not path:
        fail(UserError, f"--data must be folder:DIR (DIR/<split>/<class>/<images>), got {args.data!r}")
    return Path(path).expanduser()


def input_config(args: argparse.Namespace) -> Any:
    """The config whose train transform is timed, reading the image folder with `--workers` workers."""
    config = with_changes(load_config(args.config), **{
        "data.name": "folder", "data.path": str(_folder(args)), "data.workers": args.workers})
    if args.img is not None:
        config.data.image_size = args.img
    return config


def _input_check(args: argparse.Namespace) -> None:
    if args.workers < 0 or args.warmup < 0:
        fail(UserError, "--workers and --warmup must be >= 0")
    split = input_config(args).data.train_split
    if not (_folder(args) / split).is_dir():
        fail(UserError, f"no image folder {_folder(args) / split}: make one with "
                        f"python -m learngene_jax.data.make_folder --out {_folder(args)} --count 1200")


def describe_transform(config: Any) -> str:
    """The train transform of `config` in timm's words (both frameworks run it)."""
    aug, d = config.aug, config.data
    parts = [f"{'RandomResizedCrop' if aug.random_resized_crop else 'resize'} {d.interpolation} {d.image_size}"]
    parts += ["flip"] if aug.flip else []
    parts += [timm_auto_augment(aug)] if aug.randaugment else []
    parts += [f"random erasing {aug.random_erasing:g}"] if aug.random_erasing else []
    parts += [f"repeated_aug={aug.repeated_aug}"] if aug.repeated_aug > 1 else []
    return ", ".join(parts)


def timm_auto_augment(aug: Any) -> str:
    """timm's RandAugment string for the config's settings (ours follows `rand-m9-mstd0.5-inc1`)."""
    return f"rand-m{aug.randaugment_magnitude:g}-n{aug.randaugment_ops}-mstd{aug.randaugment_mstd:g}-inc1"


class ProcessSampler:
    """Peak RSS and CPU seconds of this process and all its descendants, sampled every `interval` s in a thread
    (worker processes are children, grandchildren, ...)."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.me, self.interval = psutil.Process(), interval
        self.cpu: dict[int, float] = {}  # pid → latest user + system seconds
        self.peak_main = self.peak_worker = self.peak_total = 0
        self.descendants: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        """Read every process of the tree once."""
        import psutil

        with self._lock:
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    with p.oneshot():
                        times, rss = p.cpu_times(), p.memory_info().rss
                except psutil.Error:  # ended between listing and reading
                    continue
                self.cpu[p.pid] = times.user + times.system
                total += rss
                if p.pid == self.me.pid:
                    self.peak_main = max(self.peak_main, rss)
                else:
                    self.descendants.add(p.pid)
                    self.peak_worker = max(self.peak_worker, rss)
            self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> tuple[float, float]:
        """(this process, its descendants) CPU seconds so far (a fresh sample)."""
        self.sample()
        with self._lock:
            main = self.cpu.get(self.me.pid, 0.0)
            return main, sum(v for pid, v in self.cpu.items() if pid != self.me.pid)


def time_batches(epochs: Callable[[int], Iterable[Any]], nbytes: Callable[[Any], int],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Images/s over `--steps` batches after `--warmup` untimed ones, epoch after epoch as needed; CPU cores busy
    over the timed window (this process and every worker process), bytes per image and peak RSS."""

    def endless() -> Iterator[Any]:
        for epoch in itertools.count():
            count = 0
            for batch in epochs(epoch):
                count += 1
                yield batch
            if not count:  # an epoch without a full batch would loop forever
                fail(UserError, f"epoch {epoch} gave no batch of {args.batch}: use a smaller --batch or more images")

    batches = endless()
    with ProcessSampler() as sampler:
        for _ in range(args.warmup):
            next(batches)
        cpu_main, cpu_workers = sampler.cpu_seconds()
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = next(batches)
        wall = time.perf_counter() - start
        end_main, end_workers = sampler.cpu_seconds()
        batches.close()  # stops the epoch's iterator (and its workers) now, not when collected
    return dict(images_per_s=round(args.steps * args.batch / wall, 2),
                bytes_per_image=nbytes(batch) / args.batch,
                cores_busy=round((end_main - cpu_main + end_workers - cpu_workers) / wall, 2),
                cores_busy_main=round((end_main - cpu_main) / wall, 2),
                cores_busy_workers=round((end_workers - cpu_workers) / wall, 2),
                peak_rss_mb=round(sampler.peak_main / MB, 1), peak_worker_rss_mb=round(sampler.peak_worker / MB, 1),
                peak_total_rss_mb=round(sampler.peak_total / MB, 1), child_processes=len(sampler.descendants),
                timed_s=round(wall, 3))


def _learngene_batches(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    from absl import flags

    from learngene_jax import data

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    loader = data.make_loader(config, config.data.train_split, train=True, batch_size=args.batch)
    # the trainer's stream: one iterator over all steps, its worker processes kept across epochs
    stream = loader.steps(1 + args.warmup + args.steps)
    try:
        return time_batches(lambda epoch: stream if epoch == 0 else (), lambda batch: sum(
            v.nbytes for v in batch.values()), args)
    finally:
        close = getattr(loader, "close", None)
        if close is not None:
            close()


class ImageFolder:
    """`root/<class>/<image>` → (transform(RGB PIL image), class index), classes in sorted order (torchvision's)."""

    def __init__(self, root: Path, transform: Callable[[Any], Any]):
        from learngene_jax.data.sources import IMAGE_SUFFIXES

        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
                        if f.suffix.lower() in IMAGE_SUFFIXES]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


def posterize_at_least_one_bit(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize op keeping at least one bit (module level: DataLoader workers may pickle it)."""
    from PIL import ImageOps

    return img if bits_to_keep >= 8 else ImageOps.posterize(img, max(1, bits_to_keep))


POSTERIZE_NOTE = ("timm's RandAugment posterize is patched in the timm process to keep >= 1 bit: timm 1.0.31 asks "
                  "for 0 bits at magnitude 10, which Pillow >= 13 rejects; ours clamps the same way")


def _timm_batches(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    import torch

    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    ops = timm.data.auto_augment.NAME_TO_OP
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        ops[name] = posterize_at_least_one_bit  # before create_transform: its ops look the function up once
    aug, d = config.aug, config.data
    transform = timm.data.create_transform(
        d.image_size, is_training=True, scale=(aug.rrc_scale_min, 1.0), hflip=0.5 if aug.flip else 0.0,
        color_jitter=None, auto_augment=timm_auto_augment(aug) if aug.randaugment else None,
        interpolation=d.interpolation, mean=tuple(d.mean), std=tuple(d.std), re_prob=aug.random_erasing,
        re_mode="pixel", re_count=1)
    dataset = ImageFolder(_folder(args) / d.train_split, transform)
    # DeiT's repeated augmentation: each of ceil(N / repeats) shuffled examples `repeats` times (as ours)
    repeats = max(1, aug.repeated_aug)
    order = np.random.default_rng(0).permutation(len(dataset))[: -(-len(dataset) // repeats)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=np.repeat(order, repeats)[
        :len(dataset)].tolist(), num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True)
    row = time_batches(lambda epoch: loader, lambda batch: sum(t.element_size() * t.numel() for t in batch), args)
    return {**row, "note": POSTERIZE_NOTE}


def _input_frameworks(args: argparse.Namespace) -> list[str]:
    return list(INPUT_FRAMEWORKS)


def _describe_step(row: dict[str, Any]) -> str:
    return f"{row['step_ms']:.1f} ms/step"


def _describe_input(row: dict[str, Any]) -> str:
    return f"{row['images_per_s']:.1f} images/s, {row['cores_busy']:.2f} cores busy"


def _input_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    config = input_config(args)
    measure = _learngene_batches if framework == "learngene_jax" else _timm_batches
    row = measure(args, config)
    return dict(framework=framework, workers=args.workers, **row, batch=args.batch, img=config.data.image_size,
                steps=args.steps, warmup=args.warmup, transform=describe_transform(config))


# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: one subcommand per thing timed."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--system-malloc", action="store_true", help="run without the transparent huge pages "
                        "that learngene_jax.hostmem gives malloc's big blocks (both frameworks)")
    common.add_argument("--rounds", type=int, default=2, help="processes per framework, A/B/A/B (default 2)")

    def framework_option(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        parser.add_argument("--framework", choices=list(names), default=None,
                            help="time only this framework, in this process, and print its JSON row (what "
                                 "each round runs)")

    f = sub.add_parser("forward", parents=[common],
                       help="eval-mode forward pass (jitted JAX vs timm under torch.inference_mode)")
    f.add_argument("--model", required=True, help="a LeViT variant (levit_128s ... levit_384)")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--img", type=int, default=224)
    f.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    f.add_argument("--steps", type=int, default=10, help="timed steps per process")
    f.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one")
    f.add_argument("--skip-timm", action="store_true", help="time JAX alone (no torch needed)")
    framework_option(f, ["jax", "timm"])
    f.set_defaults(check=_forward_check, frameworks=_forward_frameworks, run_one=_forward_one, key="step_ms",
                   describe=_describe_step, report=report_steps)

    steps = argparse.ArgumentParser(add_help=False)  # the train-step benchmarks' device, precision and timing
    steps.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    steps.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: compute dtype (GPU), "
                       "params and optimizer state stay float32; torch uses autocast")
    steps.add_argument("--compile", action="store_true", help="also time torch.compile")
    steps.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    steps.add_argument("--steps", type=int, default=10, help="timed steps per process")
    steps.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one")
    steps.add_argument("--skip-torch", action="store_true", help="time JAX alone (no torch needed)")

    t = sub.add_parser("train-step", parents=[common, steps],
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
    t.add_argument("--scan", action="store_true", help="run the blocks with lax.scan (faster compiles)")
    framework_option(t, ["jax", "torch", "torch_compile"])
    t.set_defaults(check=_train_step_check, frameworks=_train_step_frameworks, run_one=_train_step_one,
                   key="step_ms", describe=_describe_step, report=report_steps)

    m = sub.add_parser("lm-train-step", parents=[common, steps],
                       help="one training step of a Llama decoder: the trainer's jitted step vs transformers' "
                            "LlamaForCausalLM (AdamW)")
    m.add_argument("--config", default=LM_CONFIG, help="configs/X.py[:arg] whose decoder, batch, context and "
                   "optimizer are timed (default: the LM demo's)")
    m.add_argument("--depth", type=int, default=LM_DEPTH, help=f"layers (default {LM_DEPTH}, the LM demo's teacher)")
    m.add_argument("--vocab", type=int, default=BYTE_VOCAB, help=f"vocabulary (default {BYTE_VOCAB}: byte tokens)")
    m.add_argument("--width", type=int, help="model width (default: the config's)")
    m.add_argument("--heads", type=int, help="attention heads (default: the config's)")
    m.add_argument("--kv-heads", type=int, help="key/value heads (default: the config's)")
    m.add_argument("--mlp-dim", type=int, help="SwiGLU hidden size (default: the config's)")
    m.add_argument("--batch", type=int, help="sequences per step (default: the config's batch_size)")
    m.add_argument("--context", type=int, help="tokens per sequence (default: the config's data.context)")
    framework_option(m, ["jax", "torch", "torch_compile"])
    m.set_defaults(check=_lm_check, frameworks=_train_step_frameworks, run_one=_lm_train_step_one, key="step_ms",
                   describe=_describe_step, report=report_steps)

    e = sub.add_parser("expand", parents=[common],
                       help="time expanding a TLEG gene into a descendant param tree (vs PyTorch)")
    e.add_argument("--size", default="b", choices=["ti", "s", "b"])
    e.add_argument("--depth", type=int, default=12)
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--warmup", type=int, default=2)
    e.add_argument("--skip-torch", action="store_true")
    framework_option(e, ["jax", "torch"])
    e.set_defaults(check=None, frameworks=_expand_frameworks, run_one=_expand_one, key="step_ms",
                   describe=_describe_step, report=report_steps)

    i = sub.add_parser("input", parents=[common],
                       help="images/s of the host input pipeline vs timm's transform + torch DataLoader")
    i.add_argument("--data", required=True, help="folder:DIR, an image folder DIR/<split>/<class>/<images> "
                   "(python -m learngene_jax.data.make_folder writes one)")
    i.add_argument("--workers", type=int, default=2, help="worker processes of both pipelines (0: in process)")
    i.add_argument("--batch", type=int, default=64)
    i.add_argument("--steps", type=int, default=12, help="timed batches per process")
    i.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    i.add_argument("--config", default=DEFAULT_CONFIG, help="configs/X.py[:arg] whose train transform is timed "
                   "(default: the DeiT ImageNet recipe of TLEG-S)")
    i.add_argument("--img", type=int, default=None, help="image size (default: the config's data.image_size)")
    framework_option(i, INPUT_FRAMEWORKS)
    i.set_defaults(check=_input_check, frameworks=_input_frameworks, run_one=_input_one, key="images_per_s",
                   describe=_describe_input, report=report_input)
    return p


def main(argv: list[str] | None = None) -> int | None:
    """Parse, time each framework in its own processes (or, with --framework, time one here), report."""
    args = build_parser().parse_args(argv)
    if args.system_malloc:
        os.environ[SYSTEM_MALLOC] = "1"  # read by _child_env
    for name in ("batch", "img", "steps", "depth", "rounds", "width", "heads", "kv_heads", "mlp_dim", "vocab",
                 "context"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            fail(UserError, f"--{name.replace('_', '-')} must be >= 1")
    if args.check is not None:
        args.check(args)
    malloc = "glibc, huge pages" if hostmem.huge_pages_active() else "glibc defaults"
    if args.framework:
        print(json.dumps({**args.run_one(args, args.framework), "malloc": malloc,
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
        return None
    child_argv = list(sys.argv[1:] if argv is None else argv)
    results, failures = run_rounds(child_argv, args.frameworks(args), args.rounds, args.describe)
    rows = combine(results, args.key) if results else []
    if args.command == "forward" and "timm" in results:
        print(f"same weights: {results['timm'][0]['check']}")
    if args.command == "lm-train-step" and len(results) > 1:
        print(same_loss_line(results))
    if args.command in ("train-step", "lm-train-step"):
        rows = _with_mfu(rows)
    if rows:
        args.report(rows)
    if failures:
        print("error: " + "; ".join(failures), file=sys.stderr)
        return 1
    return None


if __name__ == "__main__":
    cli.run(main)
