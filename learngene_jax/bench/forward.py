"""`forward`: a jitted eval forward of a model with a timm counterpart (LeViT) against timm's, with the same
weights (a parity check)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from learngene_jax.bench.runner import jax_cache, jax_device, step_row, time_calls
from learngene_jax.errors import UserError, fail

if TYPE_CHECKING:
    import jax


def timm_names() -> dict[str, str]:
    """Models with a timm counterpart the benchmark can build (name → timm model name)."""
    from learngene_jax.models.levit import VARIANTS

    return {name: name for name in VARIANTS}


def check(args: argparse.Namespace) -> None:
    """A UserError unless the model has a timm counterpart."""
    names = timm_names()
    if args.model not in names:
        fail(UserError, f"no timm counterpart for {args.model!r}; benchmarkable: {', '.join(names)}")


def frameworks(args: argparse.Namespace) -> list[str]:
    """JAX, then timm unless --skip-timm."""
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


def run_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Time the eval forward of `framework` in this process; its row (timm's with the parity check)."""
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
