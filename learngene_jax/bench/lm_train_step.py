"""`lm-train-step`: one training step of the trainer on a Llama decoder against Hugging Face transformers'
LlamaForCausalLM with the same weights, tokens and optimizer in PyTorch; tokens/s and both losses."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from learngene_jax.bench.runner import jax_cache, step_row, time_calls
from learngene_jax.bench.train_step import autocast, check_precision, compiled_step, framework_device, step_fields
from learngene_jax.config_lib import load_config, with_changes
from learngene_jax.errors import UserError, fail

if TYPE_CHECKING:
    import jax

    from learngene_jax.models.llama import Llama


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


def check(args: argparse.Namespace) -> None:
    """A UserError for a precision the device does not run or heads that do not group."""
    check_precision(args)
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
    run, _, losses = compiled_step(step_fn, state, batch, {})
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
        with autocast(args):
            logits = forward(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets)  # as objectives/language.py: in float32
        loss.backward()
        if opt_config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), opt_config.grad_clip)
        opt.step()
        sync()
        losses.append(loss.detach())

    return step, losses


def run_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Time `framework`'s LM train step in this process; its row with both losses and the FLOPs."""
    name, device = framework_device(args, framework)
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
                    last_step=len(losses) - 1, loss_last=float(losses[-1]), **step_fields(args, name, flops))


def same_loss_line(results: dict[str, list[dict[str, Any]]]) -> str:
    """The frameworks' losses at step 0 (the same weights and tokens) and at the last step (after as many updates
    of the same optimizer), first round, and their largest difference."""
    first = [r[0] for r in results.values()]
    diff = max(abs(r[k] - first[0][k]) for r in first for k in ("loss_step0", "loss_last"))
    losses = ", ".join(f"{r['framework']} {r['loss_step0']:.6f} / {r['loss_last']:.6f}" for r in first)
    return f"loss at step 0 / step {first[0]['last_step']}: {losses} (max |difference| {diff:.1e})"
