"""Model registry: names → flax modules with their default architecture.

The plain architectures shared by every method are registered here (ViT/DeiT with timm's names as aliases, LeViT,
the small CNN, VGG); each method package registers the models only it uses (aux nets, pools, As-ViT) when it is
imported, and lookups import the method packages first (`learngene_jax.methods.load`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.cnn import SmallCNN
from learngene_jax.models.levit import VARIANTS as LEVIT_VARIANTS
from learngene_jax.models.levit import LeViT
from learngene_jax.models.llama import GPT2, Llama
from learngene_jax.models.vgg import VGGAncestor, VGGDescendant
from learngene_jax.models.vit import ViT

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str) -> Any:
    """config.precision → the compute dtype; 'auto' is bfloat16 on GPUs and TPUs (the official runs use AMP) and
    float32 on CPUs (where XLA emulates bfloat16 slowly)."""
    if precision == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else jnp.float32
    if precision not in DTYPES:
        fail(ConfigError, f"precision must be auto, float32 or bfloat16, got {precision!r}")
    return DTYPES[precision]


# Widths and heads of the DeiT sizes used throughout the learngene papers.
VIT_SIZES = {"ti": dict(width=192, num_heads=3), "s": dict(width=384, num_heads=6),
             "b": dict(width=768, num_heads=12)}

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a model constructor to the registry."""
    def wrap(fn):
        _REGISTRY[name] = fn
        return fn
    return wrap


def _load_methods() -> None:
    from learngene_jax import methods  # late: method packages import this module to register their models

    methods.load()


def model_names() -> list[str]:
    """All registered model names (timm-style aliases included)."""
    _load_methods()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments override its defaults."""
    _load_methods()
    if name not in _REGISTRY:
        fail(ConfigError, f"unknown model {name!r}; known models: {', '.join(model_names())}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        fail(ConfigError, f"bad arguments for model {name!r}: {e}")


def _sized(cls, size: str, defaults: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    return cls(**{**VIT_SIZES[size], **defaults, **kwargs})


@register("vit")
def vit(**kwargs: Any) -> ViT:
    """Any plain ViT (descendant layout by default: no class token, average pool, fc_norm, eps 1e-6)."""
    return ViT(**kwargs)


for _size in VIT_SIZES:
    register(f"deit_{_size}")(
        lambda _s=_size, **kw: _sized(ViT, _s, dict(class_token=True, pool="token", final_norm="norm"), kw))
    register(f"vit_{_size}")(lambda _s=_size, **kw: _sized(ViT, _s, {}, kw))
register("cnn")(lambda **kw: SmallCNN(**kw))
register("vgg_ancestor")(lambda **kw: VGGAncestor(**kw))
register("vgg_descendant")(lambda **kw: VGGDescendant(**kw))


# Decoder LMs (Hugging Face LlamaForCausalLM / GPT2LMHeadModel layouts through convert/hf.py).
register("llama")(lambda **kw: Llama(**kw))
register("gpt2")(lambda **kw: GPT2(**kw))


@register("levit")
def any_levit(**kwargs: Any) -> LeViT:
    """Any LeViT (defaults: timm's levit_384, distilled)."""
    return LeViT(**kwargs)


for _name, _cfg in LEVIT_VARIANTS.items():
    register(_name)(lambda _c=_cfg, **kw: LeViT(**{**_c, **kw}))

# timm's names for the same architectures (class token, token pooling, eps 1e-6: timm's ViT and DeiT), so that
# `create_model("vit_small_patch16_224")` and `convert --arch deit_tiny_patch16_224` mean what they mean in timm.
TIMM_SIZES = {"tiny": "ti", "small": "s", "base": "b"}
TIMM_ALIASES: dict[str, dict[str, Any]] = {}
for _timm, _size in TIMM_SIZES.items():
    for _family, _extra in (("vit", {}), ("deit", {}), ("deit", {"distilled": True})):
        _alias = f"{_family}_{_timm}{'_distilled' if _extra else ''}_patch16_224"
        TIMM_ALIASES[_alias] = dict(**VIT_SIZES[_size], depth=12, patch_size=16, image_size=224, class_token=True,
                                    pool="token", final_norm="norm", eps=1e-6, **_extra)
        register(_alias)(lambda _a=_alias, **kw: ViT(**{**TIMM_ALIASES[_a], **kw}))

# Fields that say how to run a model, not what it is; they are not stored with its weights.
RUNTIME_FIELDS = ("dtype", "scan_layers", "scan_unroll", "remat", "attention_impl", "drop_path_rate",
                  "distilled_training", "patch_stride", "patch_dilation")
_CLASS_NAMES: dict[type, str] = {ViT: "vit", SmallCNN: "cnn", VGGAncestor: "vgg_ancestor",
                                 VGGDescendant: "vgg_descendant", Llama: "llama", GPT2: "gpt2"}


def register_class(cls: type, name: str) -> None:
    """Let `model_spec` name instances of `cls` by the registry entry `name` (which takes all its fields)."""
    _CLASS_NAMES[cls] = name


def register_model_class(name: str, cls: type, **defaults: Any) -> None:
    """Register `cls` under `name` both ways: `create_model(name, **kw)` builds cls(**defaults, **kw) and
    `model_spec` names its instances `name`."""
    register(name)(lambda **kw: cls(**{**defaults, **kw}))
    register_class(cls, name)



def model_spec(module: nn.Module) -> dict[str, Any]:
    """JSON description {'model': name, 'kwargs': {...}} that `create_model` turns back into `module`."""
    _load_methods()
    if type(module) not in _CLASS_NAMES:
        fail(ConfigError, f"{type(module).__name__} is not a registered model class")
    skip = {"parent", "name", *RUNTIME_FIELDS}
    kwargs = {f: getattr(module, f) for f in module.__dataclass_fields__ if f not in skip}
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return {"model": _CLASS_NAMES[type(module)], "kwargs": kwargs}


def model_from_spec(spec: dict[str, Any], **runtime: Any) -> nn.Module:
    """Inverse of `model_spec`; `runtime` sets fields such as dtype or scan_layers."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["kwargs"].items()}
    return create_model(spec["model"], **kwargs, **runtime)


register_class(LeViT, "levit")

from learngene_jax.models.lora import LoRAGPT2, LoRALlama  # noqa: E402  (lora.py imports llama.py, so last)

register_model_class("lora_llama", LoRALlama)
register_model_class("lora_gpt2", LoRAGPT2)
