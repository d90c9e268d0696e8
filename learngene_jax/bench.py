"""python -m learngene_jax.bench forward — throughput of a jitted JAX model next to its timm counterpart.

Both run in one process with the same weights and thread count, their steps interleaved so that load on a
shared machine hits both alike; medians are reported. Prints a table, then one JSON object per framework.
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

from learngene_jax import cli
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


def time_interleaved(steps: dict[str, Callable[[], None]], count: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each step function, calling them in turn `count` times after `warmup` rounds."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
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
    if len(rows) == 2:
        print(f"jax/timm step-time ratio: {rows[0]['step_ms'] / rows[1]['step_ms']:.2f}")
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


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: one subcommand per thing timed."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("forward", help="eval-mode forward pass (jitted JAX vs timm under torch.inference_mode)")
    f.add_argument("--model", required=True, help=f"one of {', '.join(TIMM_NAMES)}")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--img", type=int, default=224)
    f.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    f.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    f.add_argument("--warmup", type=int, default=2, help="untimed rounds after compilation")
    f.add_argument("--skip-timm", action="store_true", help="time JAX alone (no torch needed)")
    f.set_defaults(func=_forward)
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse, time, report."""
    args = build_parser().parse_args(argv)
    for name in ("batch", "img", "steps"):
        if getattr(args, name) < 1:
            fail(UserError, f"--{name} must be >= 1")
    report(args.func(args))


if __name__ == "__main__":
    cli.run(main)
