"""Heur and Auto Learngene for decoder language models (reference/learngene-lm.md §2).

Adapter gene (Def A, the YuanMou reading): an ancestor = a frozen base decoder + LoRA adapters trained on a stream of
source tasks; the gene = the adapters (A, B) of chosen layers — Heur: the last k; Auto: the k layers whose effective
update ΔW_l = (α/r)·B_l A_l changed least while the ancestor learned the tasks after the first,
ρ_l = Σ_t ‖ΔW_l(end of t) − ΔW_l(start of t)‖_F / ‖W_l + ΔW_l(start of t)‖_F (all targets of the layer together; the
project's VGG rule ‖ΔK‖/‖K‖ applied to the effective weight). A descendant on a new task starts those layers'
adapters from the gene (`--config.lora.gene`), the others as fresh LoRA (B = 0), and trains all adapters.
Every LoRA run of the trainer saves its adapters as a `heur_lora` gene (WORKDIR/gene, all its LoRA layers);
`select` keeps the chosen layers.

Layer gene (Def B, Inheritune / Heur-style, for smaller descendants): `init_method='layer_gene'` builds a decoder of
config.depth layers from the model directory config.init: its embeddings, final norm and head, the layers
`layer_gene.layers` of it placed at the bottom (Inheritune: the first k) or the top (Heur: the last k) of the
descendant, fresh layers elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.convert import peft
from learngene_jax.data.tokenize import check_table
from learngene_jax.errors import ConfigError, GeneError, fail
from learngene_jax.genes.core import FORMAT_VERSION, Gene, parse_lm_meta
from learngene_jax.genes.lm import PLAIN, arch_of, lm_fields
from learngene_jax.models import lora
from learngene_jax.models.llama import GPT2, Llama

NAME = "heur_lora"
AUX_CLASS = lora.LoRADecoder  # a LoRA run of the trainer saves its adapters as this gene
SECTION = "lora"


@dataclasses.dataclass(frozen=True)
class AdapterGeneMeta:
    """An adapter gene: the base decoder it adapts (`arch`, its `fields` without depth, `depth`), the LoRA settings
    (`rank`, `scale` = α/r or α/√r, `targets`) and the base layers whose adapters it holds (`layers`, in order)."""

    method: str
    arch: str
    fields: tuple[tuple[str, Any], ...]
    depth: int
    rank: int
    scale: float
    targets: tuple[str, ...]
    layers: tuple[int, ...]
    base_fingerprint: str = ""  # `fingerprint` of the base decoder's weights the adapters were trained on
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fields": dict(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AdapterGeneMeta:
        return parse_lm_meta(cls, data)

    def __str__(self) -> str:
        return json.dumps(self.to_json())


META = AdapterGeneMeta


def base_model(meta: AdapterGeneMeta) -> Llama | GPT2:
    """The plain decoder the gene's adapters belong to."""
    return PLAIN[meta.arch](**dict(meta.fields), depth=meta.depth)


def meta_from_aux(model: lora.LoRALlama | lora.LoRAGPT2) -> AdapterGeneMeta:
    """Metadata of the adapters of every LoRA layer of `model`."""
    base = lora.plain(model)
    layers = tuple(model.lora_layers) or tuple(range(model.depth))
    return AdapterGeneMeta(method=NAME, arch=arch_of(base), fields=lm_fields(base), depth=model.depth,
                           rank=model.lora_rank, scale=float(model.lora_scale), targets=tuple(model.lora_targets),
                           layers=layers)


def gene_shapes(meta: AdapterGeneMeta) -> dict[str, Any]:
    """{'lora': {target_lora_a: (k, in, r), target_lora_b: (k, r, out)}} for the gene's k layers."""
    shapes = base_model(meta).layer_shapes()
    k, r = len(meta.layers), meta.rank
    out = {}
    for t in meta.targets:
        fan_in, fan_out = shapes[t]
        out[f"{t}_lora_a"] = jax.ShapeDtypeStruct((k, fan_in, r), np.float32)
        out[f"{t}_lora_b"] = jax.ShapeDtypeStruct((k, r, fan_out), np.float32)
    return {SECTION: out}


def extract(params: dict[str, Any], meta: AdapterGeneMeta) -> Gene:
    """The adapters of meta.layers out of LoRA-model params (stacked over all base layers), with the base's
    fingerprint in the metadata."""
    index = np.asarray(meta.layers, np.int64)
    base = {k: v for k, v in params.items() if k != SECTION}
    meta = dataclasses.replace(meta, base_fingerprint=meta.base_fingerprint or fingerprint(base))
    return Gene({SECTION: {k: np.asarray(v)[index] for k, v in params[SECTION].items()}}, meta)


def to_peft(gene: Gene, directory: str | Path, **options: Any) -> Path:
    """Write the adapter gene as a PEFT adapter directory (convert/peft.py `save_peft` and its options)."""
    m = gene.meta
    return peft.save_peft(directory, base_model(m), peft.Adapters(m.rank, m.scale, m.targets, m.layers,
                                                                  gene.params[SECTION]), **options)


def from_peft(directory: str | Path, base: Llama | GPT2, base_params: dict[str, Any] | None = None) -> Gene:
    """A PEFT LoRA adapter directory as an adapter gene of `base` (a plain Llama / GPT-2); `base_params` give it the
    base's fingerprint (the weights its adapters update)."""
    a = peft.read_peft(directory, base)
    meta = AdapterGeneMeta(method=NAME, arch=arch_of(base), fields=lm_fields(base), depth=base.depth, rank=a.rank,
                           scale=a.scale, targets=a.targets, layers=a.layers,
                           base_fingerprint=fingerprint(base_params) if base_params is not None else "")
    return Gene({SECTION: dict(a.arrays)}, meta)


def fingerprint(params: dict[str, Any], samples: int = 4096) -> str:
    """sha256 (16 hex digits) over every array's path, shape and `samples` evenly strided float32 values: the same
    weights give the same fingerprint whether read from a model directory or a Hugging Face one, at any size."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda x: jax.tree_util.keystr(x[0])):
        flat = np.asarray(leaf).reshape(-1)
        step = max(1, flat.size // samples)
        h.update(jax.tree_util.keystr(path).encode() + str(np.shape(leaf)).encode())
        h.update(np.ascontiguousarray(flat[::step], np.float32).tobytes())
    return h.hexdigest()[:16]


def check_base(gene: Gene, base_params: dict[str, Any], where: str) -> None:
    """ConfigError when the adapter gene was trained on other base weights than `base_params` (the adapters are
    updates of those weights); lora.other_base=True allows it."""
    theirs = gene.meta.base_fingerprint
    base = {k: v for k, v in base_params.items() if k != SECTION}
    if theirs and theirs != fingerprint(base):
        fail(ConfigError, f"the adapter gene {where} was trained on other base weights (fingerprint {theirs}, this "
                          f"base {fingerprint(base)}); use the base it came from, or set lora.other_base=True to "
                          f"transfer it anyway")


def select(gene: Gene, layers: Sequence[int]) -> Gene:
    """The sub-gene of the base layers `layers` (each must be in the gene)."""
    missing = sorted(set(layers) - set(gene.meta.layers))
    if missing:
        fail(GeneError, f"layers {missing} are not in this adapter gene (it holds {gene.meta.layers})")
    rows = np.asarray([gene.meta.layers.index(i) for i in layers], np.int64)
    meta = dataclasses.replace(gene.meta, layers=tuple(int(i) for i in layers))
    return Gene({SECTION: {k: np.asarray(v)[rows] for k, v in gene.params[SECTION].items()}}, meta)


def lora_adapters(gene: Gene, model: lora.LoRALlama | lora.LoRAGPT2, layers: Sequence[int],
                  fresh: dict[str, Any]) -> dict[str, Any]:
    """LoRA params for `model`: `fresh` (its own init) with the rows of `layers` (default: the gene's own layers)
    replaced by the gene's adapters, in order. ConfigError when the gene's base, rank or targets differ."""
    meta = gene.meta
    base = lora.plain(model)
    layers = tuple(layers) or meta.layers
    mine, theirs = _architecture(arch_of(base), lm_fields(base)), _architecture(meta.arch, meta.fields)
    if (arch_of(base), mine) != (meta.arch, theirs):
        fail(ConfigError, f"the adapter gene adapts a {meta.arch} {dict(meta.fields)}, not this "
                          f"{arch_of(base)} {dict(lm_fields(base))}; use a gene of the same base decoder")
    if (model.lora_rank, tuple(model.lora_targets)) != (meta.rank, meta.targets):
        fail(ConfigError, f"the adapter gene has rank {meta.rank} and targets {meta.targets}; set lora.rank="
                          f"{meta.rank} and lora.targets={meta.targets} (got {model.lora_rank}, "
                          f"{tuple(model.lora_targets)})")
    if not np.isclose(float(model.lora_scale), meta.scale):
        fail(ConfigError, f"the adapter gene was trained with scale {meta.scale:g} (α/r), this run has "
                          f"{float(model.lora_scale):g}; set lora.alpha and lora.rslora as the gene's run")
    if len(layers) != len(meta.layers) or not all(0 <= i < model.depth for i in layers):
        fail(ConfigError, f"lora.gene_layers={layers} must name {len(meta.layers)} layers in 0..{model.depth - 1} "
                          f"(the gene holds {len(meta.layers)})")
    if model.lora_layers and set(layers) - set(model.lora_layers):
        fail(ConfigError, f"lora.gene_layers={layers} must be among lora.layers={tuple(model.lora_layers)}")
    index = np.asarray(layers, np.int64)
    return {k: v if k not in gene.params[SECTION] else _put(v, index, gene.params[SECTION][k])
            for k, v in fresh.items()}


def _architecture(arch: str, fields: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """`fields` as the function they compute, so that equal decoders compare equal: fields a gene predates at their
    defaults, head_dim 0 (width / heads) written out, dropout rates (training settings, not weights) left out."""
    f = {**dict(lm_fields(PLAIN[arch]())), **dict(fields)}
    f = {k: v for k, v in f.items() if not k.endswith(("dropout", "pdrop"))}
    if not f.get("head_dim") and f.get("num_heads"):
        f["head_dim"] = f["width"] // f["num_heads"]
    return tuple(sorted(f.items()))


def _put(x: Any, index: np.ndarray, rows: Any) -> jax.Array:
    """x with x[index] = rows (traceable: runs inside the trainer's jitted init)."""
    return jnp.asarray(x).at[index].set(jnp.asarray(rows, jnp.asarray(x).dtype))


def effective_update(meta: AdapterGeneMeta, gene_params: dict[str, Any]) -> dict[str, np.ndarray]:
    """ΔW = scale·A B per target, (k, in, out) for the gene's k layers."""
    p = gene_params[SECTION]
    return {t: meta.scale * np.einsum("lir,lro->lio", np.asarray(p[f"{t}_lora_a"], np.float64),
                                      np.asarray(p[f"{t}_lora_b"], np.float64)) for t in meta.targets}


def adapter_change(base_layers: dict[str, Any], start: Gene, end: Gene) -> np.ndarray:
    """ρ_l = ‖ΔW_l(end) − ΔW_l(start)‖_F / ‖W_l + ΔW_l(start)‖_F over all targets of layer l, for the layers of
    both genes (same layers, all base layers): the Auto criterion on the effective weights (shape (k,))."""
    if start.meta.layers != end.meta.layers:
        fail(GeneError, f"the two adapter genes hold different layers ({start.meta.layers} vs {end.meta.layers})")
    d0, d1 = effective_update(start.meta, start.params), effective_update(end.meta, end.params)
    index = np.asarray(start.meta.layers, np.int64)
    num = sum(((d1[t] - d0[t]) ** 2).sum(axis=(1, 2)) for t in start.meta.targets)
    den = sum(((np.asarray(base_layers[t], np.float64)[index] + d0[t]) ** 2).sum(axis=(1, 2))
              for t in start.meta.targets)
    return np.sqrt(num) / np.sqrt(den)


def descendant_depth(meta: AdapterGeneMeta, depth: Any, layers_source: Any = None) -> int:
    fail(GeneError, "an adapter gene (heur_lora) is not expanded: it starts LoRA adapters; train with "
                    "--config.lora.gene=GENE_DIR --config.lora.rank=R --config.init=BASE_MODEL_DIR")


def expand(gene: Gene, depth: int | None = None, **unused: Any) -> dict[str, Any]:
    return descendant_depth(gene.meta, depth)


def aux_model(meta: AdapterGeneMeta, **overrides: Any) -> lora.LoRALlama | lora.LoRAGPT2:
    """The LoRA decoder whose adapters the gene holds (adapters only on the gene's layers)."""
    return lora.with_lora(base_model(meta), meta.rank, 1.0, meta.targets, meta.layers).clone(
        lora_scale=meta.scale, **overrides)


def layer_gene_params(params: dict[str, Any], source_depth: int, layers: Sequence[int], depth: int, place: str,
                      fresh_layers: dict[str, Any]) -> dict[str, Any]:
    """Descendant params of `depth` layers: the source model's top-level params, its `layers` at the bottom
    (place='bottom', Inheritune) or the top ('top', Heur) in order, `fresh_layers` ((depth, ...) stacked) elsewhere."""
    k = len(layers)
    if depth < 1:
        fail(ConfigError, f"a layer-gene descendant needs config.depth >= 1, got {depth}")
    if not layers or k > depth or not all(0 <= i < source_depth for i in layers) or len(set(layers)) != k:
        fail(ConfigError, f"layer_gene.layers={tuple(layers)} must name 1..{depth} distinct layers in "
                          f"0..{source_depth - 1}")
    if place not in ("bottom", "top"):
        fail(ConfigError, f"layer_gene.place must be 'bottom' or 'top', got {place!r}")
    slots = np.arange(k) if place == "bottom" else np.arange(depth - k, depth)
    src = np.asarray(layers, np.int64)
    stacked = {name: _put(v, slots, jnp.asarray(params["layers"][name])[src]) for name, v in fresh_layers.items()}
    return {**{n: v for n, v in params.items() if n != "layers"}, "layers": stacked}


def layer_gene_student(config: Any, num_classes: int) -> Any:
    """Student `layer_gene`: a plain decoder of config.depth layers from the model directory config.init (its
    embeddings, final norm and head; its layers config.layer_gene.layers at config.layer_gene.place; fresh layers
    elsewhere)."""
    from learngene_jax.models.io import load_model
    from learngene_jax.students import Student, dummy_images, runtime_kwargs

    source, variables = load_model(config.init, **runtime_kwargs(config))
    if not isinstance(source, (Llama, GPT2)) or lora.is_lora(source):
        fail(ConfigError, f"init_method='layer_gene' takes a plain Llama / GPT-2 model directory; {config.init} "
                          f"holds a {type(source).__name__}")
    check_table(source.vocab_size, num_classes, config.init)
    if not config.depth:
        fail(ConfigError, "init_method='layer_gene' needs the descendant's depth: pass --config.depth=D")
    depth = int(config.depth)
    model = source.clone(depth=max(depth, 1))
    raw = config.layer_gene.layers
    layers = tuple(int(i) for i in (raw.split(",") if isinstance(raw, str) else raw))
    place = config.layer_gene.place
    layer_gene_params(variables["params"], source.depth, layers, depth, place, {})  # checks the settings now

    def init(rng, loaded):
        fresh = model.init(rng, dummy_images(model), train=False)["params"]["layers"]
        return {"params": layer_gene_params(loaded["params"], source.depth, layers, depth, place, fresh)}
    return Student(model, init, variables, None, f"layer_gene:{config.init}:{place}{list(layers)}")
