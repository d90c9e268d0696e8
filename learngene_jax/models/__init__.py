"""Model registry: names → flax modules with their default architecture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.asvit import AsViT, from_genotype
from learngene_jax.models.aux import SWSAux, TLEGAux
from learngene_jax.models.cnn import SmallCNN
from learngene_jax.models.levit import VARIANTS as LEVIT_VARIANTS
from learngene_jax.models.levit import LeViT
from learngene_jax.models.pool import LearngenePool, PoolStudent, StitchedViT
from learngene_jax.models.vgg import VGGAncestor, VGGDescendant
from learngene_jax.models.vit import ViT

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


def model_names() -> list[str]:
    """All registered model names."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments override its defaults."""
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
    register(f"tleg_aux_{_size}")(lambda _s=_size, **kw: _sized(TLEGAux, _s, {}, kw))
    # The official SWS Aux-S uses 12 heads of dim 32 (Des-S uses 6 of dim 64); Aux-B is 12 x 64.
    register(f"sws_aux_{_size}")(lambda _s=_size, **kw: _sized(
        SWSAux, _s, dict(depth=16, **({"num_heads": 12} if _s == "s" else {})), {**kw}))
register("tleg_aux")(lambda **kw: TLEGAux(**kw))
register("cnn")(lambda **kw: SmallCNN(**kw))
register("sws_aux")(lambda **kw: SWSAux(**{"depth": 16, **kw}))
register("vgg_ancestor")(lambda **kw: VGGAncestor(**kw))
register("vgg_descendant")(lambda **kw: VGGDescendant(**kw))


@register("levit")
def any_levit(**kwargs: Any) -> LeViT:
    """Any LeViT (defaults: timm's levit_384, distilled)."""
    return LeViT(**kwargs)


for _name, _cfg in LEVIT_VARIANTS.items():
    register(_name)(lambda _c=_cfg, **kw: LeViT(**{**_c, **kw}))

# Learngene Pool: stage-1 student with its feature projections, the stitched pool, a stitched descendant.
register("lgpool_student")(lambda **kw: PoolStudent(**kw))
register("lgpool")(lambda **kw: LearngenePool(**kw))
register("stitched_vit")(lambda **kw: StitchedViT(**kw))


@register("asvit")
def asvit(genotype: str | None = None, **kwargs: Any) -> AsViT:
    """As-ViT from a genotype string (default the searched seed); or give the parsed fields as kwargs."""
    return from_genotype(genotype, **kwargs) if genotype is not None else AsViT(**kwargs)

# Fields that say how to run a model, not what it is; they are not stored with its weights.
RUNTIME_FIELDS = ("dtype", "scan_layers", "remat", "attention_impl", "drop_path_rate", "distilled_training",
                  "patch_stride", "patch_dilation")
_CLASS_NAMES: dict[type, str] = {ViT: "vit", TLEGAux: "tleg_aux", SWSAux: "sws_aux", SmallCNN: "cnn",
                                 VGGAncestor: "vgg_ancestor", VGGDescendant: "vgg_descendant",
                                 PoolStudent: "lgpool_student", LearngenePool: "lgpool", StitchedViT: "stitched_vit"}


def register_class(cls: type, name: str) -> None:
    """Let `model_spec` name instances of `cls` by the registry entry `name` (which takes all its fields)."""
    _CLASS_NAMES[cls] = name


register_class(AsViT, "asvit")


def model_spec(module: nn.Module) -> dict[str, Any]:
    """JSON description {'model': name, 'kwargs': {...}} that `create_model` turns back into `module`."""
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
