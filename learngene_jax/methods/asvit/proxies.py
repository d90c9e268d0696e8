"""Training-free As-ViT proxies: length distortion (forward-mode `jax.jvp`) and NTK condition number.

Both read the token mean before the final norm (official `forward_features(x)[1]`) of freshly initialised
networks, averaged over several inits; the curve and the images stay fixed for a whole search or grow run.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.asvit.data import proxy_images
from learngene_jax.methods.asvit.genotype import Genotype, format_genotype
from learngene_jax.methods.asvit.model import NORM_NAMES, AsViT, from_genotype, mac_count, param_count

Array = jax.Array
Params = dict[str, Any]
# Compiled proxy programs kept before the jit caches are cleared: each holds ~1,500 memory maps of XLA's
# JIT code and Linux allows 65,530 per process (a 224² search died at its 44th architecture without this).
MAX_COMPILED = 16
# Leaves the NTK differentiates: the official keeps parameters named `weight` (conv/Linear kernels and
# LayerNorm scales), not biases.
NTK_LEAVES = ("kernel", "scale")


def default_proxy_config(tiny: bool = False) -> ml_collections.ConfigDict:
    """Proxy settings of the paper (224² inputs, 5 inits, 10 curve points, 16 NTK images); `tiny`: 32² inputs,
    2 inits, 8 NTK images and fast compiles, for seconds-long test runs."""
    config = ml_collections.ConfigDict(dict(
        image_size=224,  # proxy input resolution
        repeats=5,  # random inits averaged per architecture
        curve_points=10,  # θ ∈ linspace(0, 2π, points)
        ntk_images=16,  # the Gram is ntk_images × ntk_images
        ntk_chunk=1,  # per-sample gradients vmapped this many at a time (1 was fastest on a 2-core CPU)
        # XLA backend optimisation off: compiles ~2x faster, runs ~3x slower. Each new architecture compiles
        # anew, so this pays off where compiling dominates (small inputs such as 32²), not at 224².
        fast_compile=False,
    ))
    if tiny:
        config.update(dict(image_size=32, repeats=2, ntk_images=8, fast_compile=True))
    return config


def strip_norms(params: Params) -> Params:
    """The param tree without its LayerNorms (for a `use_norm=False` model with the same weights)."""
    flat = flatten_dict(params)
    return unflatten_dict({k: v for k, v in flat.items() if not any(n in NORM_NAMES for n in k)})


def circle_points(u: Array, v: Array, points: int) -> tuple[Array, Array]:
    """x(θ) = u cos θ + v sin θ and its tangent dx/dθ at θ ∈ linspace(0, 2π, points): two (points, *u.shape).

    As the official `TEG`, the closing point θ = 2π repeats θ = 0 and is counted too.
    """
    theta = jnp.linspace(0.0, 2.0 * jnp.pi, points).reshape((-1,) + (1,) * u.ndim)
    return u * jnp.cos(theta) + v * jnp.sin(theta), -u * jnp.sin(theta) + v * jnp.cos(theta)


def unit_circle(key: Array, points: int, shape: tuple[int, ...]) -> tuple[Array, Array]:
    """`circle_points` on a random unit circle: u, v orthonormal in pixel space (official: SVD of N(0, 1))."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (math.prod(shape), 2), jnp.float32))
    return circle_points(q[:, 0].reshape(shape), q[:, 1].reshape(shape), points)


@partial(jax.jit, static_argnames="model")
def length_distortion(model: AsViT, params: Params, curve: Array, tangent: Array) -> Array:
    """Σ_k ‖dz/dθ(θ_k)‖₂ of the pooled features z along the curve: one jvp over all points as a batch.

    Samples are independent (no batch statistics), so the batched jvp equals one jvp per point. `model`
    should have `use_norm=False` (the official removes every LayerNorm for this proxy).
    """
    features = lambda x: model.apply({"params": params}, x, features=True)
    _, dz = jax.jvp(features, (curve,), (tangent,))  # (points, features)
    return jnp.sqrt(jnp.sum(dz * dz, axis=-1)).sum()


def ntk_jacobian(model: AsViT, params: Params, images: Array, chunk: int = 1) -> Array:
    """(samples, weights) per-sample gradients of Σ features w.r.t. every kernel and LayerNorm scale."""
    flat = flatten_dict(params)
    weights = {k: v for k, v in flat.items() if k[-1] in NTK_LEAVES}
    others = {k: v for k, v in flat.items() if k[-1] not in NTK_LEAVES}

    def sample_gradient(image: Array) -> Array:
        def total(w):
            tree = unflatten_dict({**others, **w})
            return model.apply({"params": tree}, image[None], features=True).sum()

        grads = jax.grad(total)(weights)
        return jnp.concatenate([jnp.ravel(g) for g in jax.tree_util.tree_leaves(grads)])

    return jax.lax.map(sample_gradient, images, batch_size=min(chunk, images.shape[0]))


@partial(jax.jit, static_argnames=("model", "chunk"))
def ntk_gram(model: AsViT, params: Params, images: Array, chunk: int = 1) -> Array:
    """The (samples, samples) empirical NTK Gram J Jᵀ of the pooled-feature sum."""
    jac = ntk_jacobian(model, params, images, chunk)
    return jnp.matmul(jac, jac.T, precision=jax.lax.Precision.HIGHEST)


def condition_number(gram: np.ndarray) -> float:
    """λmax/λmin of a Gram (float64 on the host); inf when it is not finite or not positive definite.

    The official marks a NaN κ as bad; a λmin ≤ 0 (rank-deficient in float32) gives a meaningless negative or
    infinite κ there, and is bad here too.
    """
    gram = np.asarray(gram, np.float64)
    if not np.all(np.isfinite(gram)):
        return math.inf
    eig = np.linalg.eigvalsh(gram)  # ascending
    return float(eig[-1] / eig[0]) if eig[0] > 0 else math.inf


def _proxy_values(keys: Array, images: Array, curves: Array, tangents: Array, *, model: AsViT,
                  chunk: int) -> tuple[Array, Array]:
    """Grams (repeats, n, n) and length distortions (repeats,), one fresh init per repeat."""
    bare = model.clone(use_norm=False)

    def one(args):
        key, curve, tangent = args
        # Only the features path: the final norm and head never reach either proxy.
        params = model.init(key, images[:1], features=True)["params"]
        return ntk_gram(model, params, images, chunk), length_distortion(bare, strip_norms(params), curve, tangent)

    return jax.lax.map(one, (keys, curves, tangents))


@dataclasses.dataclass(frozen=True)
class ProxyScores:
    """Mean NTK condition number (lower is better) and length distortion (higher is better) over inits."""

    ntk: float
    length: float
    ntk_per_init: tuple[float, ...]
    length_per_init: tuple[float, ...]

    @property
    def ntk_bad(self) -> bool:
        """True when some init gave no usable κ (official: 'bad gradients')."""
        return not math.isfinite(self.ntk)

    @property
    def length_bad(self) -> bool:
        """True when the length distortion overflowed."""
        return not math.isfinite(self.length)


class ProxyEvaluator:
    """Scores genotypes at one proxy setting: fixed images and curves, fresh inits per call."""

    def __init__(self, proxy: ml_collections.ConfigDict, data_name: str, seed: int) -> None:
        for field in ("image_size", "repeats", "curve_points", "ntk_images", "ntk_chunk"):
            if int(proxy[field]) < 1:
                fail(ConfigError, f"proxy.{field} must be >= 1, got {proxy[field]}")
        self.image_size = int(proxy.image_size)
        self.chunk = int(proxy.ntk_chunk)
        self.images = jnp.asarray(proxy_images(data_name, int(proxy.ntk_images), self.image_size, seed))
        curve_keys = jax.random.split(jax.random.key(seed), int(proxy.repeats))
        shape = (self.image_size, self.image_size, 3)
        self.curves, self.tangents = jax.vmap(lambda k: unit_circle(k, int(proxy.curve_points), shape))(curve_keys)
        options = {"xla_backend_optimization_level": 0} if proxy.fast_compile else None
        self._values = jax.jit(_proxy_values, static_argnames=("model", "chunk"), compiler_options=options)
        self._compiled: set[AsViT] = set()

    def model(self, genotype: Genotype) -> AsViT:
        """The proxy network of a genotype (features only, so no classes)."""
        return from_genotype(genotype, image_size=self.image_size, num_classes=0)

    def __call__(self, genotype: Genotype, key: Array) -> ProxyScores:
        """κ and length distortion of `genotype`, each the mean over `repeats` inits drawn from `key`."""
        model = self.model(genotype)
        if model not in self._compiled and len(self._compiled) >= MAX_COMPILED:
            self._values.clear_cache()  # drops every jit cache; the executables go with them
            self._compiled.clear()
        self._compiled.add(model)
        keys = jax.random.split(key, self.curves.shape[0])
        grams, lengths = self._values(keys, self.images, self.curves, self.tangents, model=model, chunk=self.chunk)
        kappas = tuple(condition_number(g) for g in np.asarray(grams))
        lengths = tuple(float(v) for v in np.asarray(lengths))
        return ProxyScores(ntk=float(np.mean(kappas)), length=float(np.mean(lengths)), ntk_per_init=kappas,
                           length_per_init=lengths)


def finite_or_none(value: float) -> float | None:
    """JSON-safe score: None for a bad (non-finite) value."""
    return value if math.isfinite(value) else None


def architecture_record(genotype: Genotype, scores: ProxyScores, count_image_size: int) -> dict[str, Any]:
    """JSON fields of one scored genotype: params/MACs (1000 classes, `count_image_size`²) and proxy scores."""
    model = from_genotype(genotype, image_size=count_image_size)
    return {"genotype": format_genotype(genotype), "params": param_count(model), "macs": mac_count(model),
            "ntk": finite_or_none(scores.ntk), "length_distortion": finite_or_none(scores.length),
            "ntk_per_init": [finite_or_none(v) for v in scores.ntk_per_init],
            "length_per_init": [finite_or_none(v) for v in scores.length_per_init]}
