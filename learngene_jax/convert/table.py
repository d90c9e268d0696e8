"""Conversion is a table: each rule maps a PyTorch key template to a Flax path with a transform.

`{layer}` in a template marks a leading stacked axis on the Flax side (blocks.{layer}.x ↔ blocks/x[layer]).
For models with several variable collections (BatchNorm: params and batch_stats), Flax paths start with the
collection name and `expected` holds all collections. Every missing, extra and mis-shaped key is collected and
reported together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from learngene_jax.errors import ConversionError, fail

# PyTorch → Flax array transforms and their inverses.
TRANSFORMS = {
    "id": (lambda a: a, lambda a: a),
    "linear": (lambda a: a.T, lambda a: a.T),  # (out, in) ↔ (in, out)
    "conv": (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1)),  # OIHW ↔ HWIO
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """torch key template ↔ flax path ('a/b/c'); `flax=None` drops the torch key (e.g. buffers)."""

    torch: str
    flax: str | None
    kind: str = "id"

    @property
    def stacked(self) -> bool:
        return "{layer}" in self.torch

    def regex(self) -> re.Pattern:
        pattern = re.escape(self.torch).replace(re.escape("{layer}"), r"(?P<layer>\d+)")
        return re.compile(pattern + "$")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} → {'a/b': x}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a/b': x} → {'a': {'b': x}}."""
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, tuple | list) else tuple(x.shape)


def transformed_shape(kind: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The shape a PyTorch array of `shape` has on the Flax side after the `kind` transform (nothing is allocated)."""
    return TRANSFORMS[kind][0](np.broadcast_to(np.zeros((), np.int8), tuple(shape))).shape


def match_keys(shapes: Mapping[str, Sequence[int]], rules: Sequence[Rule], expected: Mapping[str, Any],
               what: str = "checkpoint") -> dict[str, tuple[Rule, tuple[str, ...]]]:
    """For each Flax path of `expected`, the rule and the PyTorch key(s) it reads (one per layer, in order, for a
    stacked path), from the keys and shapes of a state dict alone (nothing is read); raise ConversionError
    summarising the missing, extra and mis-shaped keys (`summarize_problems`)."""
    compiled = [(rule, rule.regex()) for rule in rules]
    plain: dict[str, tuple[Rule, tuple[str, ...], tuple[int, ...]]] = {}  # path → (rule, keys, Flax shape)
    stacked: dict[str, dict[int, tuple[str, tuple[int, ...]]]] = {}
    stacked_rule: dict[str, Rule] = {}
    sources: dict[str, str] = {}
    extra = []
    for key, shape in shapes.items():
        found = next(((rule, m) for rule, rx in compiled if (m := rx.match(key))), None)
        if found is None:
            extra.append(key)
            continue
        rule, m = found
        if rule.flax is None:
            continue
        flax_shape = transformed_shape(rule.kind, shape)
        if rule.stacked:
            stacked.setdefault(rule.flax, {})[int(m.group("layer"))] = (key, flax_shape)
            stacked_rule[rule.flax] = rule
        else:
            plain[rule.flax] = (rule, (key,), flax_shape)
        sources[rule.flax] = rule.torch
    problems = [f"unexpected key {k}" for k in extra]
    want = flatten(expected)
    reported = set()
    for path, layers in stacked.items():
        count = _shape_of(want[path])[0] if path in want else max(layers) + 1
        gaps = sorted(set(range(count)) - set(layers))
        beyond = sorted(i for i in layers if i >= count)
        problems += [f"missing key {sources[path].format(layer=i)}" for i in gaps]
        problems += [f"unexpected key {sources[path].format(layer=i)}" for i in beyond]
        layer_shapes = {s for _, s in layers.values()}
        if len(layer_shapes) > 1:
            problems.append(f"{sources[path]} has different shapes across layers: {sorted(layer_shapes)}")
        if gaps or beyond or len(layer_shapes) > 1:
            reported.add(path)
            continue
        plain[path] = (stacked_rule[path], tuple(layers[i][0] for i in range(count)), (count, *layer_shapes.pop()))
    for path, shape in want.items():
        if path in reported:
            continue
        if path not in plain:
            template = next((r.torch for r in rules if r.flax == path), path)
            problems.append(f"missing key {template.format(layer='N')}")
        elif plain[path][2] != _shape_of(shape):
            problems.append(f"{sources[path].format(layer='N')} gives shape {plain[path][2]} for {path}, "
                            f"expected {_shape_of(shape)}")
    problems += [f"key {sources[p]} has no place in this model ({p})" for p in plain if p not in want]
    if problems:
        fail(ConversionError, f"{what} does not match: " + summarize_problems(problems, shapes))
    return {p: plain[p][:2] for p in want}


def torch_to_flax(state_dict: Mapping[str, np.ndarray], rules: Sequence[Rule], expected: Mapping[str, Any],
                  what: str = "checkpoint") -> dict[str, Any]:
    """Map a flat state dict onto the nested Flax tree whose shapes are `expected` (float32), checked by
    `match_keys`."""
    plan = match_keys({k: np.shape(v) for k, v in state_dict.items()}, rules, expected, what)
    out = {}
    for path, (rule, keys) in plan.items():
        forward = TRANSFORMS[rule.kind][0]
        arrays = [forward(np.asarray(state_dict[k])) for k in keys]
        out[path] = (np.stack(arrays) if rule.stacked else arrays[0]).astype(np.float32)
    return unflatten(out)


def flax_to_torch(params: Mapping[str, Any], rules: Iterable[Rule]) -> dict[str, np.ndarray]:
    """Inverse of `torch_to_flax` for every rule whose Flax path exists in `params`."""
    flat = flatten(params)
    out = {}
    for rule in rules:
        if rule.flax is None or rule.flax not in flat:
            continue
        array = np.asarray(flat[rule.flax])
        inverse = TRANSFORMS[rule.kind][1]
        if rule.stacked:
            for i in range(array.shape[0]):
                out[rule.torch.format(layer=i)] = np.ascontiguousarray(inverse(array[i]))
        else:
            out[rule.torch] = np.ascontiguousarray(inverse(array))
    return out


def summarize_problems(problems: Sequence[str], sd: Mapping[str, Any], shown: int = 6) -> str:
    """One readable line for a list of key problems: counts by kind, the first `shown`, and the likely cause
    when the pattern is a known one (BatchNorm folded into the weights, another architecture)."""
    kinds = {"missing": sum(p.startswith("missing") for p in problems),
             "unexpected": sum(p.startswith(("unexpected", "key ")) for p in problems)}
    kinds["shape"] = len(problems) - kinds["missing"] - kinds["unexpected"]
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    text = f"{len(problems)} problems ({counts}): " + "; ".join(problems[:shown])
    if len(problems) > shown:
        text += f"; … and {len(problems) - shown} more"
    missing_bn = any(p.startswith("missing") and (".bn." in p or "running_" in p) for p in problems)
    unexpected = [p for p in problems if p.startswith(("unexpected", "key "))]
    fused = all(p.split()[2 if p.startswith("unexpected") else 1].endswith(".bias") for p in unexpected)
    if missing_bn and fused and not any(".bn." in k or "running_" in k for k in sd):
        text += (" — the checkpoint has no BatchNorm keys: BatchNorm was probably folded into the convolutions "
                 "for inference; convert the checkpoint saved before fusing")
    elif kinds["missing"] and kinds["unexpected"] and not kinds["shape"]:
        text += " — most keys differ: this is probably another architecture or a differently wrapped checkpoint"
    return text
