"""PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors) ↔ LoRA adapters of chosen layers
of a Llama or GPT-2 base (models/lora.py), which methods/heur/lm.py turns into and out of adapter genes.

Written so that `PeftModel.from_pretrained(base, DIR)` (PEFT 0.21) loads them with no missing or unexpected keys and
computes the same function; read by selecting the modules PEFT would adapt from the config (`target_modules`,
`layers_to_transform`, `layers_pattern`, `exclude_modules`, the `all-linear` shorthand) and requiring exactly their
weights. Key names come from the base's conversion table (convert/hf.py): the module of a layer weight is its
Hugging Face key without `.weight`; PEFT saves `base_model.model.<module>.lora_A.weight` (r, in) and `lora_B.weight`
(out, r), nn.Linear layouts for GPT-2's Conv1D maps too (fan_in_fan_out only changes how PEFT merges).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.convert.hf import GPT2_RULES, LLAMA_RULES
from learngene_jax.convert.state_dict import read_json_object, read_state_dict, write_safetensors
from learngene_jax.convert.table import summarize_problems
from learngene_jax.errors import ConversionError, fail
from learngene_jax.genes.lm import arch_of
from learngene_jax.models.llama import GPT2, Llama

CONFIG_NAME = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # what PEFT's from_pretrained reads, in that order
PREFIX = "base_model.model."  # PeftModel → LoraModel → the causal LM
# LoraConfig settings that change the function (or the base weights) beyond plain LoRA, with the value that means
# "off"; any other value is refused by name (PEFT 0.21 tuners/lora/config.py).
PLAIN_LORA = {"use_dora": False, "lora_bias": False, "bias": "none", "modules_to_save": None, "rank_pattern": {},
              "alpha_pattern": {}, "layer_replication": None, "trainable_token_indices": None,
              "target_parameters": None, "use_qalora": False, "alora_invocation_tokens": None, "velora_config": None,
              "monteclora_config": None, "use_bdlora": None, "arrow_config": None, "kasa_config": None}
# init_lora_weights values that rewrite the base weights at init (the adapter then only fits that residual base) or
# select a LoRA variant; PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) turns the first kind
# into plain LoRA (and writes init_lora_weights=true).
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga", "mica")


@dataclasses.dataclass(frozen=True)
class Adapters:
    """LoRA adapters of the base layers `layers` (in order): `arrays` = {f"{target}_lora_a": (k, in, r),
    f"{target}_lora_b": (k, r, out)} for each of `targets`, scaled by `scale` (α/r, or α/√r for rsLoRA)."""

    rank: int
    scale: float
    targets: tuple[str, ...]
    layers: tuple[int, ...]
    arrays: Mapping[str, Any]


def layer_modules(base: Llama | GPT2) -> dict[str, str]:
    """LoRA target → its Hugging Face module with a `{layer}` slot (q → model.layers.{layer}.self_attn.q_proj)."""
    rules = LLAMA_RULES if isinstance(base, Llama) else GPT2_RULES
    shapes = base.layer_shapes()
    return {r.flax.removeprefix("layers/"): r.torch.removesuffix(".weight") for r in rules
            if r.stacked and r.flax and r.flax.startswith("layers/") and len(shapes.get(r.flax[7:], ())) == 2}


def target_names(base: Llama | GPT2) -> dict[str, str]:
    """LoRA target → the shortest `target_modules` entry that names it alone (q → q_proj; GPT-2's attn_proj →
    attn.c_proj, since c_proj also ends mlp.c_proj): PEFT matches an entry against the end of a module's name."""
    inner = {t: m.split("{layer}.", 1)[1] for t, m in layer_modules(base).items()}
    out = {}
    for t, path in inner.items():
        parts = path.split(".")
        out[t] = next(s for s in (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
                      if not any(o == s or o.endswith("." + s) for u, o in inner.items() if u != t))
    return out


def _layers_pattern(base: Llama | GPT2) -> str:
    """The name of the base's layer list (Llama: layers, GPT-2: h), PEFT's layers_pattern."""
    return next(iter(layer_modules(base).values())).split(".{layer}")[0].rsplit(".", 1)[-1]


def peft_config(base: Llama | GPT2, adapters: Adapters, base_name: str | None = None, rslora: bool = False,
                dropout: float = 0.0) -> dict[str, Any]:
    """adapter_config.json for `adapters` of `base`: r, lora_alpha (α = scale·r, or scale·√r with use_rslora: PEFT's
    scaling is then their scale either way), their targets and, unless they cover every layer, their layers."""
    alpha = adapters.scale * (math.sqrt(adapters.rank) if rslora else adapters.rank)
    alpha = round(alpha) if math.isclose(alpha, round(alpha), rel_tol=1e-9) else alpha
    every = tuple(adapters.layers) == tuple(range(base.depth))
    names = target_names(base)
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name,
            "r": adapters.rank, "lora_alpha": alpha, "use_rslora": rslora, "lora_dropout": dropout,
            "target_modules": [names[t] for t in adapters.targets],
            "layers_to_transform": None if every else list(adapters.layers),
            "layers_pattern": None if every else _layers_pattern(base),
            "fan_in_fan_out": isinstance(base, GPT2), "bias": "none", "modules_to_save": None, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True}


def peft_tensors(base: Llama | GPT2, adapters: Adapters) -> dict[str, np.ndarray]:
    """adapter_model.safetensors for `adapters` of `base`: PEFT's key and (out, in) layout per layer and target."""
    modules = layer_modules(base)
    out = {}
    for t in adapters.targets:
        a, b = (np.asarray(adapters.arrays[f"{t}_lora_{x}"], np.float32) for x in "ab")
        for row, layer in enumerate(adapters.layers):
            module = PREFIX + modules[t].format(layer=layer)
            out[f"{module}.lora_A.weight"] = a[row].T
            out[f"{module}.lora_B.weight"] = b[row].T
    return out


def save_peft(directory: str | Path, base: Llama | GPT2, adapters: Adapters, *, base_name: str | None = None,
              rslora: bool = False, dropout: float = 0.0, overwrite: bool = False) -> Path:
    """Write `adapters` of `base` as a PEFT adapter directory (adapter_config.json, adapter_model.safetensors)."""
    directory = Path(directory).expanduser()
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not overwrite)):
        fail(ConversionError, f"{directory} exists and is not an empty directory; choose another --out or pass "
                              f"--overwrite")
    config = peft_config(base, adapters, base_name, rslora, dropout)
    write_safetensors(directory / WEIGHTS[0], peft_tensors(base, adapters), {"format": "pt"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_peft_config(directory: str | Path) -> dict[str, Any]:
    """adapter_config.json, checked to describe plain LoRA for a causal LM (anything else is named)."""
    path = Path(directory).expanduser() / CONFIG_NAME
    if not path.is_file():
        fail(ConversionError, f"{directory} has no {CONFIG_NAME}: pass a PEFT adapter directory (what "
                              f"PeftModel.save_pretrained writes)")
    config = read_json_object(path, "a PEFT adapter_config.json")
    kind = config.get("peft_type")
    if kind != "LORA":
        fail(ConversionError, f"{directory} is a PEFT {kind} adapter; learngene reads LoRA adapters (peft_type LORA) "
                              f"only — merge it into its base with PEFT (merge_and_unload) and use the merged model")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        fail(ConversionError, f"{directory} adapts a {config['task_type']} model; learngene reads adapters of causal "
                              f"LMs (task_type CAUSAL_LM)")
    unsupported = [f"{k}={config[k]!r}" for k, off in PLAIN_LORA.items() if config.get(k) not in (off, None, {}, [])]
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS):
        unsupported.append(f"init_lora_weights={init!r} (the adapter fits a base PEFT rewrote at init; save it with "
                           f"path_initial_model_for_weight_conversion to get plain LoRA)")
    if unsupported:
        fail(ConversionError, f"{directory}: {', '.join(unsupported)} is not plain LoRA, which is what learngene's "
                              f"adapters compute (x W + s·(x A) B); merge it into its base with PEFT "
                              f"(merge_and_unload) and use the merged model")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float) or isinstance(config.get(key), bool) or config[key] <= 0:
            fail(ConversionError, f"{path} sets {key}={config.get(key)!r}; PEFT's LoRA needs a positive number")
    return dict(config)


def selected_modules(config: Mapping[str, Any], base: Llama | GPT2) -> dict[str, tuple[int, str]]:
    """Hugging Face module → (layer, target) for every module of the base PEFT adapts under `config`; a selected
    module that is not a layer weight (embeddings, head, norms) is a ConversionError."""
    rules = LLAMA_RULES if isinstance(base, Llama) else GPT2_RULES
    layered = {m.format(layer=i): (i, t) for t, m in layer_modules(base).items() for i in range(base.depth)}
    others = {r.torch.rsplit(".", 1)[0].format(layer=i) for r in rules for i in range(base.depth)} - set(layered)
    targets = config.get("target_modules")
    if isinstance(targets, str) and targets.lower() == "all-linear":  # every Linear/Conv1D but the output head
        targets = sorted(layered)
    if not targets:
        fail(ConversionError, f"adapter_config.json names no target_modules ({targets!r})")
    chosen = [m for m in sorted(layered.keys() | others) if _selects(config, targets, m)]
    beyond = [m for m in chosen if m not in layered]
    if beyond:
        fail(ConversionError, f"the adapter puts LoRA on {', '.join(beyond[:3])}; learngene adapts the decoder "
                              f"layers' linear maps only ({', '.join(target_names(base).values())})")
    return {m: layered[m] for m in chosen}


def _selects(config: Mapping[str, Any], targets: str | list[str], module: str) -> bool:
    """Whether PEFT adapts `module`: exclude_modules (a regex matching the whole name, or entries matching its
    end), then target_modules (a regex matching the whole name; or entries matching its end, filtered by
    layers_to_transform, whose index is the number after layers_pattern or else the first numbered name part)."""
    exclude = config.get("exclude_modules")
    if isinstance(exclude, str) and re.fullmatch(exclude, module):
        return False
    if isinstance(exclude, list) and any(module == e or module.endswith("." + e) for e in exclude):
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    if not any(module == t or module.endswith("." + t) for t in targets):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    patterns = config.get("layers_pattern") or []
    patterns = [patterns] if isinstance(patterns, str) else patterns
    regexes = [rf"(?:^|.*?\.){re.escape(p)}\.(\d+)\." for p in patterns] or [r".*?\.[^.]*\.(\d+)\."]
    found = next((m for rx in regexes if (m := re.match(rx, module))), None)
    return found is not None and int(found.group(1)) in ([layers] if isinstance(layers, int) else layers)


def read_weights(directory: str | Path) -> dict[str, np.ndarray]:
    """The adapter's tensors (adapter_model.safetensors, else adapter_model.bin) as float32."""
    directory = Path(directory).expanduser()
    path = next((directory / n for n in WEIGHTS if (directory / n).is_file()), None)
    if path is None:
        fail(ConversionError, f"{directory} has neither {' nor '.join(WEIGHTS)}: pass the directory "
                              f"PeftModel.save_pretrained wrote")
    return {k: np.asarray(v, np.float32) for k, v in read_state_dict(path).items()}


def read_peft(directory: str | Path, base: Llama | GPT2) -> Adapters:
    """The adapters of a PEFT LoRA adapter directory for `base` (a plain Llama / GPT-2): the layers and targets PEFT
    adapts, scale lora_alpha/r (or /√r with use_rslora). ConversionError for anything PEFT would load otherwise."""
    config = read_peft_config(directory)
    chosen = selected_modules(config, base)
    layers = sorted({i for i, _ in chosen.values()})
    targets = [t for t in base.layer_shapes() if any(t == u for _, u in chosen.values())]
    if not chosen:
        fail(ConversionError, f"target_modules={config.get('target_modules')!r} selects none of this "
                              f"{arch_of(base)}'s layer weights ({', '.join(target_names(base).values())}): the "
                              f"adapter belongs to another base model ({config.get('base_model_name_or_path')})")
    if len(chosen) != len(layers) * len(targets):
        fail(ConversionError, f"the adapter adapts different weights in different layers "
                              f"({', '.join(sorted(chosen)[:3])}, ...); learngene's LoRA adapts the same targets in "
                              f"each chosen layer")
    sd = read_weights(directory)
    expected = {f"{PREFIX}{m}.lora_{x}.weight" for m in chosen for x in "AB"}
    problems = [f"missing key {k}" for k in sorted(expected - sd.keys())]
    problems += [f"unexpected key {k}" for k in sorted(sd.keys() - expected)]
    if problems:
        fail(ConversionError, f"{directory} does not match the modules its adapter_config.json adapts in this "
                              f"{base.depth}-layer {arch_of(base)}: " + summarize_problems(problems, sd)
                              + f" (was it made for another base? its config names "
                                f"{config.get('base_model_name_or_path')})")
    rank = int(config["r"])
    _check_shapes(directory, config, base, chosen, sd, rank)
    modules = {(i, t): m for m, (i, t) in chosen.items()}
    arrays = {}
    for t in targets:
        arrays[f"{t}_lora_a"] = np.stack([sd[f"{PREFIX}{modules[i, t]}.lora_A.weight"].T for i in layers])
        arrays[f"{t}_lora_b"] = np.stack([sd[f"{PREFIX}{modules[i, t]}.lora_B.weight"].T for i in layers])
    scale = float(config["lora_alpha"]) / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return Adapters(rank, scale, tuple(targets), tuple(layers), arrays)


def _check_shapes(directory: str | Path, config: Mapping[str, Any], base: Llama | GPT2,
                  chosen: Mapping[str, tuple[int, str]], sd: Mapping[str, np.ndarray], rank: int) -> None:
    """ConversionError naming the first weight whose shape is not (r, in) / (out, r) of this base's layer weight:
    another base model (a width or MLP size differs) or a rank other than config r."""
    shapes = base.layer_shapes()
    for module, (_, t) in sorted(chosen.items()):
        fan_in, fan_out = shapes[t]
        for x, want in (("A", (rank, fan_in)), ("B", (fan_out, rank))):
            got = sd[f"{PREFIX}{module}.lora_{x}.weight"].shape
            if got == want:
                continue
            if got[0 if x == "B" else 1] != want[0 if x == "B" else 1]:
                fail(ConversionError, f"{directory} was made for another base model "
                                      f"({config.get('base_model_name_or_path')}): {module}.lora_{x} has shape {got}, "
                                      f"this {arch_of(base)}'s {module} needs {want} ({fan_in} in, {fan_out} out); "
                                      f"use the base the adapter was trained on")
            fail(ConversionError, f"{directory}: {module}.lora_{x} has shape {got} but adapter_config.json sets "
                                  f"r={rank} (expected {want}); the files do not belong together")
