"""Hugging Face decoder LMs ↔ the Flax Llama and GPT-2 (models/llama.py): config.json fields and one rule table
per architecture; weights from the file(s) transformers' from_pretrained would read (safetensors or PyTorch .bin,
single or sharded, bfloat16 too).

Key layouts (transformers 5.23): LlamaForCausalLM stores nn.Linear weights (out, in) → Flax kernels are their
transpose; GPT-2's Conv1D weights are (in, out) already. Tied heads (GPT-2, Llama with tie_word_embeddings) are
not stored; GPT-2 files from the Hub lack the `transformer.` prefix and carry attention-mask buffers, dropped here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from learngene_jax.convert.state_dict import read_json_object, read_state_dict
from learngene_jax.convert.table import TRANSFORMS, Rule, flatten, flax_to_torch, match_keys, unflatten
from learngene_jax.errors import ConversionError, fail
from learngene_jax.models import lora
from learngene_jax.models.llama import GPT2, ROPE_TYPES, Llama, abstract_lm_params, context_limit
from learngene_jax.sharding import tree_shardings

LLAMA_RULES = [
    Rule("model.embed_tokens.weight", "embed"), Rule("model.norm.weight", "norm"),
    Rule("lm_head.weight", "lm_head", "linear"),
    Rule("model.layers.{layer}.input_layernorm.weight", "layers/attn_norm"),
    Rule("model.layers.{layer}.post_attention_layernorm.weight", "layers/mlp_norm"),
    *[Rule(f"model.layers.{{layer}}.self_attn.{n}_proj.weight", f"layers/{n}", "linear") for n in "qkvo"],
    *[Rule(f"model.layers.{{layer}}.mlp.{n}_proj.weight", f"layers/{n}", "linear") for n in ("gate", "up", "down")],
    # attention_bias / Qwen2's q, k, v biases and mlp_bias (the Flax params exist only when the model has them)
    *[Rule(f"model.layers.{{layer}}.self_attn.{n}_proj.bias", f"layers/{n}_bias") for n in "qkvo"],
    *[Rule(f"model.layers.{{layer}}.mlp.{n}_proj.bias", f"layers/{n}_bias") for n in ("gate", "up", "down")],
    Rule("model.layers.{layer}.self_attn.rotary_emb.inv_freq", None),  # a buffer in older conversions
]
GPT2_RULES = [
    Rule("transformer.wte.weight", "wte"), Rule("transformer.wpe.weight", "wpe"),
    Rule("transformer.ln_f.weight", "ln_f/scale"), Rule("transformer.ln_f.bias", "ln_f/bias"),
    Rule("lm_head.weight", None),  # tied to wte
    Rule("transformer.h.{layer}.attn.bias", None), Rule("transformer.h.{layer}.attn.masked_bias", None),  # masks
    *[Rule(f"transformer.h.{{layer}}.{torch}", f"layers/{flax}") for torch, flax in (
        ("ln_1.weight", "ln_1_scale"), ("ln_1.bias", "ln_1_bias"), ("ln_2.weight", "ln_2_scale"),
        ("ln_2.bias", "ln_2_bias"), ("attn.c_attn.weight", "c_attn"), ("attn.c_attn.bias", "c_attn_bias"),
        ("attn.c_proj.weight", "attn_proj"), ("attn.c_proj.bias", "attn_proj_bias"), ("mlp.c_fc.weight", "c_fc"),
        ("mlp.c_fc.bias", "c_fc_bias"), ("mlp.c_proj.weight", "mlp_proj"), ("mlp.c_proj.bias", "mlp_proj_bias"))],
]
# The Llama-family model types models/llama.py computes exactly, with their class and max_position_embeddings default
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MAX_POSITIONS = {"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768}
UNSUPPORTED = {"gemma": "Gemma (RMSNorm scaled by 1 + w, embeddings multiplied by √hidden_size, GELU MLP)",
               "recurrent_gemma": "RecurrentGemma", "phi": "Phi (partial rotary positions, LayerNorm, attention "
                                                           "and MLP in parallel; Phi-3: fused projections)"}
GPT2_TOP = ("wte.", "wpe.", "h.", "ln_f.")  # Hub GPT-2 keys without the `transformer.` prefix
EXPORT_DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16}  # ml_dtypes' bfloat16
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
GPT2_ENDOFTEXT = 50256  # <|endoftext|>, the last id of GPT-2's vocabulary: its BOS and EOS
# What a model directory keeps of the Hugging Face directory it came from (from-hf) and to-hf writes back
HF_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
# PEFT (peft/utils/constants.py, tuners/lora/layer.py): an adapter directory's weight files, and the keys a model
# with LoRA layers injected saves (q_proj.base_layer.weight, q_proj.lora_A.default.weight, lora_embedding_A...).
PEFT_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_INJECTED = re.compile(r"\.(base_layer|lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)(\.|$)")
# transformers' activation_function names (activations.py ACT2FN) for 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))),
# which models/llama.py's GPT-2 computes (jax.nn.gelu(approximate=True)); they differ only in rounding. "gelu" is the
# exact erf GELU (nanoGPT's nn.GELU()), GPT-2's gelu_approximate=False.
GPT2_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate")
GPT2_EXACT_GELU = "gelu"


def refuse_peft_adapter(directory: str | Path) -> None:
    """A ConversionError when `directory` is a PEFT adapter (adapter_config.json beside adapter_model.safetensors or
    .bin: LoRA weights without the model they adapt), naming its base model and how to merge it."""
    path = Path(directory) / "adapter_config.json"
    if not path.is_file():
        return
    try:
        base = json.loads(path.read_text()).get("base_model_name_or_path") or "BASE"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        base = "BASE"
    weights = [n for n in PEFT_ADAPTER_WEIGHTS if (Path(directory) / n).is_file()]
    fail(ConversionError, f"{directory} is a PEFT adapter (adapter_config.json{''.join(', ' + n for n in weights)}), "
                          f"not a model: it holds only LoRA weights for {base}; merge them into the base with PEFT "
                          f"and pass that directory: model = PeftModel.from_pretrained(AutoModelForCausalLM."
                          f"from_pretrained({base!r}), {str(directory)!r}); model = model.merge_and_unload(); "
                          f"model.save_pretrained(OUT); or train on as LoRA: --config.init=BASE_DIR "
                          f"--config.lora.gene={str(directory)!r} (learngene convert from-peft makes it a gene)")


def refuse_injected_lora(directory: str | Path, keys: Iterable[str]) -> None:
    """A ConversionError when the weights were saved with PEFT's LoRA layers still in the model (keys with
    `base_layer` and `lora_A.<adapter>` / `lora_B.<adapter>`): the merge scale α/r is not in such a file."""
    found = sorted(k for k in keys if PEFT_INJECTED.search(k))
    if found:
        fail(ConversionError, f"{directory} was saved with PEFT's LoRA layers still injected ({len(found)} keys such "
                              f"as {found[0]}); merge the adapters into the weights before saving: model = "
                              f"model.merge_and_unload(); model.save_pretrained(OUT), then convert OUT")


def read_config(directory: str | Path) -> dict[str, Any]:
    """config.json of a Hugging Face model directory (a PEFT adapter directory is named as such)."""
    refuse_peft_adapter(directory)
    path = Path(directory) / "config.json"
    if not path.is_file():
        fail(ConversionError, f"{directory} has no config.json: pass a Hugging Face model directory "
                              f"(save_pretrained output or a snapshot from the local cache)")
    return read_json_object(path, "a Hugging Face config.json")


def rope_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The Llama's rotary fields from config.json, read as transformers 5 reads them: `rope_scaling` when set, else
    `rope_parameters`; θ inside it, else the top-level `rope_theta` (what transformers 4 reads), else 10000."""
    section = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(section, Mapping) or any(isinstance(v, Mapping) for v in section.values()):
        fail(ConversionError, f"config.json's rope parameters {section!r} are not one flat rope_scaling / "
                              f"rope_parameters dict (per-layer-type rotary settings are not supported)")
    kind = section.get("rope_type", section.get("type", "default"))
    if kind not in ROPE_TYPES:
        fail(ConversionError, f"rope_type {kind!r} (scaled rotary positions) is not supported; the Flax Llama "
                              f"computes {', '.join(ROPE_TYPES)}")
    partial = section.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        fail(ConversionError, f"config.json sets partial_rotary_factor={partial}; the Flax Llama rotates whole heads")
    fields = {"rope_type": kind, "rope_theta": float(section.get("rope_theta", cfg.get("rope_theta", 10000.0)))}
    needs = {"linear": ("factor",), "dynamic": ("factor",), "llama3": ("factor", "low_freq_factor",
                                                                        "high_freq_factor")}.get(kind, ())
    missing = [k for k in needs if section.get(k) is None]
    if missing:
        fail(ConversionError, f"rope_type {kind!r} needs {', '.join(missing)} in config.json's rope_scaling")
    if kind != "default":
        fields["rope_factor"] = float(section["factor"])
    if kind == "llama3":  # transformers: original_max_position_embeddings defaults to max_position_embeddings
        fields.update(rope_low_freq_factor=float(section["low_freq_factor"]),
                      rope_high_freq_factor=float(section["high_freq_factor"]),
                      rope_original_positions=int(section.get("original_max_position_embeddings")
                                                  or cfg["max_position_embeddings"]))
    return fields


def sliding_window(cfg: Mapping[str, Any], kind: str, depth: int) -> int:
    """The sliding window a Mistral / Qwen2 config.json gives any layer (0: none), as transformers 5.23 reads it:
    Mistral windows every layer when sliding_window is set; Qwen2 only with use_sliding_window, and only the layers
    that layer_types (else max_window_layers) mark sliding."""
    window = cfg.get("sliding_window")
    if kind == "llama" or window is None:
        return 0
    if kind == "qwen2":
        if not cfg.get("use_sliding_window", False):
            return 0
        first = int(cfg.get("max_window_layers", 28))
        types = cfg.get("layer_types") or ["sliding_attention" if i >= first else "full" for i in range(depth)]
        if "sliding_attention" not in types:
            return 0
    return int(window)


def _drop_rate(cfg: Mapping[str, Any], key: str, default: float) -> float:
    """A dropout probability of config.json (absent: transformers' default for the model type), in [0, 1)."""
    rate = cfg.get(key, default)
    if not isinstance(rate, int | float) or not 0 <= rate < 1:
        fail(ConversionError, f"config.json sets {key}={rate!r}; a dropout probability lies in [0, 1)")
    return float(rate)


def model_from_config(cfg: Mapping[str, Any]) -> Llama | GPT2:
    """The Flax model a Hugging Face config.json describes (model_type llama or gpt2); anything this port cannot
    compute exactly is a ConversionError naming the field."""
    kind = cfg.get("model_type")
    if kind in ARCHITECTURES:
        return _llama_from_config(cfg, kind)
    if kind == "gpt2":
        act = cfg.get("activation_function", "gelu_new")
        if act not in (*GPT2_TANH_GELUS, GPT2_EXACT_GELU):
            fail(ConversionError, f"config.json sets activation_function={act!r}; the Flax GPT-2 computes the tanh "
                                  f"GELU ({', '.join(GPT2_TANH_GELUS)}) or the exact one ({GPT2_EXACT_GELU}), so "
                                  f"this model would give other logits")
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            fail(ConversionError, "config.json sets scale_attn_by_inverse_layer_idx=true (attention scores divided "
                                  "by layer index + 1, as the Stanford CRFM GPT-2s); the Flax GPT-2 does not "
                                  "implement it")
        # reorder_and_upcast_attn only reorders the scaling and computes the scores in float32: the same function
        for flag, want in (("scale_attn_weights", True), ("tie_word_embeddings", True)):
            if cfg.get(flag, want) != want:
                fail(ConversionError, f"config.json sets {flag}={cfg[flag]}; only {flag}={want} is supported")
        return GPT2(vocab_size=int(cfg["vocab_size"]), width=int(cfg["n_embd"]), depth=int(cfg["n_layer"]),
                    num_heads=int(cfg["n_head"]), mlp_dim=int(cfg.get("n_inner") or 0),
                    eps=float(cfg.get("layer_norm_epsilon", 1e-5)), max_positions=int(cfg["n_positions"]),
                    gelu_approximate=act != GPT2_EXACT_GELU,
                    **{k: _drop_rate(cfg, k, 0.1) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")})
    family = next((name for prefix, name in UNSUPPORTED.items() if str(kind).startswith(prefix)), None)
    if family:
        fail(ConversionError, f"config.json describes model_type {kind!r}: {family} is not supported; from-hf reads "
                              f"{', '.join(ARCHITECTURES)} and gpt2 models")
    fail(ConversionError, f"config.json describes model_type {kind!r}; from-hf reads {', '.join(ARCHITECTURES)} and "
                          f"gpt2 models")


def _llama_from_config(cfg: Mapping[str, Any], kind: str) -> Llama:
    """The Flax Llama for a llama / mistral / qwen2 config.json (transformers 5.23's LlamaConfig, MistralConfig,
    Qwen2Config and their defaults)."""
    if cfg.get("hidden_act", "silu") != "silu":
        fail(ConversionError, f"config.json sets hidden_act={cfg['hidden_act']!r}; the Flax Llama uses silu")
    heads, depth, width = int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or 0)
    if kind == "qwen2":  # Qwen2Attention: q, k, v with biases, o without; no MLP biases
        qkv_bias, out_bias, mlp_bias = True, False, False
    elif kind == "mistral":
        qkv_bias = out_bias = mlp_bias = False
    else:  # LlamaConfig.attention_bias puts a bias on all four attention projections
        qkv_bias = out_bias = bool(cfg.get("attention_bias", False))
        mlp_bias = bool(cfg.get("mlp_bias", False))
    return Llama(vocab_size=int(cfg["vocab_size"]), width=width, depth=depth, num_heads=heads,
                 num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                 head_dim=0 if head_dim == width // heads else head_dim,  # 0: width / heads, as a Llama's default
                 mlp_dim=int(cfg["intermediate_size"]), eps=float(cfg.get("rms_norm_eps", 1e-6)),
                 max_positions=int(cfg.get("max_position_embeddings", MAX_POSITIONS[kind])),
                 tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                 **rope_fields({"max_position_embeddings": MAX_POSITIONS[kind], **cfg}), qkv_bias=qkv_bias,
                 out_bias=out_bias, mlp_bias=mlp_bias, sliding_window=sliding_window(cfg, kind, depth),
                 model_type=kind, attention_dropout=_drop_rate(cfg, "attention_dropout", 0.0))


# The weights file transformers' from_pretrained picks in a local directory (5.23 modeling_utils.
# _get_resolved_checkpoint_files, use_safetensors=None): config.json's `transformers_weights` when set, else the first
# of these that exists; an index reads only the shards it names. save_pretrained leaves stale files behind (re-saving
# a sharded model whole keeps the old index; re-saving a whole model sharded keeps the old model.safetensors), so
# this order, not "the newest", decides what the model is.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def weight_files(directory: str | Path, explicit: str | None = None) -> tuple[list[Path], dict[str, str] | None]:
    """(files to read, the index's weight map or None) for `directory`, resolved as from_pretrained resolves them;
    `explicit` is config.json's transformers_weights."""
    directory = Path(directory)
    if explicit:
        chosen = directory / explicit
        if not explicit.endswith((".safetensors", ".safetensors.index.json")):
            fail(ConversionError, f"config.json sets transformers_weights={explicit!r}; transformers loads only a "
                                  f"*.safetensors or *.safetensors.index.json file named there")
        if not chosen.resolve().is_relative_to(directory.resolve()) or not chosen.is_file():
            fail(ConversionError, f"config.json sets transformers_weights={explicit!r}, which is not a file in "
                                  f"{directory}")
    else:
        chosen = next((directory / n for n in WEIGHT_FILES if (directory / n).is_file()), None)
        if chosen is None:
            fail(ConversionError, f"{directory} has none of {', '.join(WEIGHT_FILES)}; pass the directory "
                                  f"save_pretrained wrote (or a complete Hub snapshot)")
    if not chosen.name.endswith(".index.json"):
        return [chosen], None
    try:
        weight_map = json.loads(chosen.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        fail(ConversionError, f"{chosen} is not a weights index with a weight_map ({type(e).__name__}: {e})")
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        fail(ConversionError, f"{chosen} names {len(missing)} shard(s) that are not in {directory}: "
                              f"{', '.join(missing[:3])}; download the whole checkpoint")
    return [directory / f for f in files], weight_map


class CheckpointTensors:
    """The tensors of the weight files from_pretrained reads in a directory, opened lazily: names and shapes come
    from the safetensors headers (PyTorch .bin files are memory-mapped), and a tensor, or a block of it, is read
    from disk only when `read` asks for it; later files win for a key in several, as in transformers."""

    def __init__(self, files: Sequence[Path]):
        self._where: dict[str, tuple[Path, Any]] = {}  # key → (file, safe_open handle or memory-mapped tensors)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in files:
            if path.suffix == ".safetensors":
                handle = _open_safetensors(path)
                for key in handle.keys():  # noqa: SIM118  (safe_open has keys(), no iteration)
                    self._where[key] = (path, handle)
                    self.shapes[key] = tuple(handle.get_slice(key).get_shape())
            else:
                for key, tensor in _open_torch(path).items():
                    self._where[key] = (path, tensor)
                    self.shapes[key] = tuple(tensor.shape)

    def read(self, key: str, index: tuple[slice, ...] = ()) -> np.ndarray:
        """`key`[index] (the whole tensor for ()) as float32 numpy, read from its file now."""
        from safetensors import SafetensorError

        path, source = self._where[key]
        try:
            if hasattr(source, "get_slice"):
                part = source.get_slice(key)[index] if index else source.get_tensor(key)
            else:
                part = source[index] if index else source
                if hasattr(part, "numpy"):
                    part = part.float() if part.is_floating_point() else part
                    part = part.numpy()
        except (SafetensorError, OSError, RuntimeError) as e:
            fail(ConversionError, f"cannot read {key} from {path} ({e}); the file is damaged or incomplete")
        return np.asarray(part, np.float32)  # bfloat16 (ml_dtypes) and float16 → float32


def _open_safetensors(path: Path) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="np")
    except (SafetensorError, OSError) as e:
        fail(ConversionError, f"cannot read {path} ({e}); the file is damaged or incomplete")


def _open_torch(path: Path) -> Mapping[str, Any]:
    """pytorch_model*.bin memory-mapped (torch.load(mmap=True), tensors paged in when read); files in torch's old
    non-zip format cannot be mapped and are read whole (read_state_dict)."""
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - no torch, an old format or a damaged file: read_state_dict says which
        return read_state_dict(path)
    if not isinstance(state, Mapping):
        return read_state_dict(path)
    return state


def open_weights(directory: str | Path, explicit: str | None = None) -> CheckpointTensors:
    """The weights file(s) from_pretrained would read in `directory` (`weight_files`), opened lazily; an index's
    tensors that its shards lack are an error."""
    files, weight_map = weight_files(directory, explicit)
    tensors = CheckpointTensors(files)
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(tensors.shapes))
        if absent:
            fail(ConversionError, f"the shards lack {len(absent)} tensor(s) the index names, e.g. {absent[0]}")
    return tensors


def read_weights(directory: str | Path, explicit: str | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the weights file(s) from_pretrained would read in `directory`, as float32 numpy (all in host
    memory at once: `from_hf` reads them one at a time instead)."""
    tensors = open_weights(directory, explicit)
    return {key: tensors.read(key) for key in tensors.shapes}


def _block_reader(tensors: CheckpointTensors, rule: Rule, keys: Sequence[str]) -> Callable[[tuple[slice, ...]],
                                                                                            np.ndarray]:
    """index into a Flax leaf → that block of it, read from the files: only the layers and rows it covers. Flax
    kernels are PyTorch weights transposed (`linear`), so a block [a, b] of a kernel is the block [b, a] of the
    weight, transposed."""
    forward = TRANSFORMS[rule.kind][0]
    if rule.kind not in ("id", "linear"):
        raise ValueError(f"block reads know the id and linear transforms, not {rule.kind!r}")

    def one(key: str, index: tuple[slice, ...]) -> np.ndarray:
        return forward(tensors.read(key, index[::-1] if rule.kind == "linear" else index))

    def read(index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index)
        if not rule.stacked:
            return np.ascontiguousarray(one(keys[0], index))
        layers = range(len(keys))[index[0] if index else slice(None)]
        out = None
        for i, layer in enumerate(layers):  # one layer in host memory at a time beside the block
            block = one(keys[layer], index[1:])
            if out is None:
                out = np.empty((len(layers), *block.shape), np.float32)
            out[i] = block
        return out

    return read


def _memoized(read: Callable[[tuple[slice, ...]], np.ndarray]) -> Callable[[tuple[slice, ...]], np.ndarray]:
    """`read` once per distinct block: devices that hold the same block (replicas on a 'data' axis) share one read."""
    done: dict[tuple[tuple[Any, Any, Any], ...], np.ndarray] = {}

    def cached(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in done:
            done[key] = read(index)
        return done[key]

    return cached


def from_hf(directory: str | Path, mesh: Mesh | None = None, strategy: str = "dp",
            sharding_rules: Sequence[tuple[str, Sequence[str | None]]] = ()) -> tuple[Llama | GPT2, dict[str, Any]]:
    """(model, {'params': ...}) from a Hugging Face LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM /
    GPT2LMHeadModel directory. Every key and shape is checked from the files' headers before anything is read; then
    each param is read on its own from the files. Without `mesh`: float32 numpy. With one: each param goes straight
    to its sharding (`sharding.tree_shardings(params, mesh, strategy, sharding_rules)`), every process reading only
    the blocks its devices hold, so no host ever holds the whole checkpoint."""
    cfg = read_config(directory)
    model = model_from_config(cfg)
    tensors = open_weights(directory, cfg.get("transformers_weights"))
    refuse_injected_lora(directory, tensors.shapes)
    names = {k: k for k in tensors.shapes}  # the table's key → the file's key
    if isinstance(model, GPT2):
        names = {(f"transformer.{k}" if k.startswith(GPT2_TOP) else k): k for k in tensors.shapes}
    if isinstance(model, Llama) and model.tie_embeddings:
        names.pop("lm_head.weight", None)  # a redundant copy of the tied embedding
    rules = LLAMA_RULES if isinstance(model, Llama) else GPT2_RULES
    abstract = abstract_lm_params(model)
    plan = match_keys({k: tensors.shapes[v] for k, v in names.items()}, rules, abstract, what=f"{directory}")
    shapes = {path: leaf.shape for path, leaf in flatten(abstract).items()}
    shardings = None if mesh is None else flatten(tree_shardings(abstract, mesh, strategy, sharding_rules))
    params = {}
    for path, (rule, keys) in plan.items():
        read = _block_reader(tensors, rule, [names[k] for k in keys])
        if shardings is None:
            params[path] = read(tuple(slice(None) for _ in shapes[path]))
        else:
            params[path] = jax.make_array_from_callback(shapes[path], shardings[path], _memoized(read))
    return model, {"params": unflatten(params)}


def hf_config(model: Llama | GPT2, dtype: str = "float32", special: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config.json transformers 5 and 4 build the same model from (θ and rope scaling both as transformers 5's
    `rope_parameters` and as the top-level `rope_theta` + `rope_scaling` that transformers 4 reads); `special`: the
    bos / eos / pad token ids (`special_token_ids`)."""
    special = dict(special or {})
    if isinstance(model, GPT2):
        # <|endoftext|> = 50256 only in GPT-2's own 50,257-token vocabulary; in any other (a char model's) the last
        # id is a real token, so the ids stay unknown (null) unless the run's tokenizer names them (`special`).
        known = GPT2_ENDOFTEXT if model.vocab_size == GPT2_ENDOFTEXT + 1 else None
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": model.vocab_size,
                "n_embd": model.width, "n_layer": model.depth, "n_head": model.num_heads,
                "n_inner": model.mlp_dim or None, "n_positions": model.max_positions, "layer_norm_epsilon": model.eps,
                "activation_function": "gelu_new" if model.gelu_approximate else GPT2_EXACT_GELU,
                "tie_word_embeddings": True, "bos_token_id": known, "eos_token_id": known,
                **dict(zip(("embd_pdrop", "attn_pdrop", "resid_pdrop"), model.drop_rates, strict=True)), **special,
                "dtype": dtype, "torch_dtype": dtype}
    kind = _exportable_type(model)
    scaling = {"linear": {"factor": model.rope_factor}, "dynamic": {"factor": model.rope_factor},
               "llama3": {"factor": model.rope_factor, "low_freq_factor": model.rope_low_freq_factor,
                          "high_freq_factor": model.rope_high_freq_factor,
                          "original_max_position_embeddings": model.rope_original_positions}}.get(model.rope_type)
    cfg = {"architectures": [ARCHITECTURES[kind]], "model_type": kind, "vocab_size": model.vocab_size,
           "hidden_size": model.width, "intermediate_size": model.mlp_dim, "num_hidden_layers": model.depth,
           "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.hd,
           "hidden_act": "silu", "max_position_embeddings": model.max_positions, "rms_norm_eps": model.eps,
           "rope_theta": model.rope_theta,
           "rope_scaling": None if scaling is None else {"rope_type": model.rope_type, **scaling},
           "rope_parameters": {"rope_type": model.rope_type, "rope_theta": model.rope_theta, **(scaling or {})},
           "tie_word_embeddings": model.tie_embeddings, "attention_dropout": model.attention_dropout,
           "bos_token_id": None, "eos_token_id": None, **special, "dtype": dtype, "torch_dtype": dtype}
    window = model.sliding_window or None
    if kind == "llama":
        cfg.update(attention_bias=model.qkv_bias, mlp_bias=model.mlp_bias)
    elif kind == "mistral":
        cfg.update(sliding_window=window)
    else:  # every layer windowed (max_window_layers 0): within the window, the same as Qwen2's own layer split
        cfg.update(use_sliding_window=window is not None, sliding_window=window,
                   max_window_layers=0 if window else model.depth)
    return cfg


def _exportable_type(model: Llama) -> str:
    """The Hugging Face model_type of a Flax Llama, checked: its biases and window are ones that type has."""
    kind = model.model_type
    if kind not in ARCHITECTURES:
        fail(ConversionError, f"the Llama's model_type is {kind!r}; to-hf writes {', '.join(ARCHITECTURES)}")
    biases = (model.qkv_bias, model.out_bias, model.mlp_bias)
    allowed = {"llama": [(False, False, False), (True, True, False), (False, False, True), (True, True, True)],
               "mistral": [(False, False, False)], "qwen2": [(True, False, False)]}[kind]
    if biases not in allowed:
        fail(ConversionError, f"a {kind} model cannot hold biases on q/k/v={biases[0]}, o={biases[1]}, "
                              f"mlp={biases[2]} (llama: attention_bias on all of q, k, v, o and/or mlp_bias; qwen2: "
                              f"q, k, v only; mistral: none); set model_type to the architecture that has them")
    if kind == "llama" and model.sliding_window:
        fail(ConversionError, f"a llama model has no sliding window (sliding_window={model.sliding_window}); "
                              f"set model_type to mistral or qwen2")
    return kind


def with_zero_biases(model: GPT2, variables: Mapping[str, Any]) -> tuple[GPT2, dict[str, Any]]:
    """A bias-free GPT-2 (nanoGPT's bias=False) as the GPT-2 with biases that computes the same function: every bias
    zero, in the layout transformers' GPT2LMHeadModel stores (it has no bias=False)."""
    params = variables["params"]
    biased = model.clone(bias=True)
    layers = {**params["layers"], **{name: np.zeros((model.depth, *shape), np.float32)
                                     for name, shape in biased.layer_shapes().items() if name.endswith("_bias")}}
    ln_f = {**params["ln_f"], "bias": np.zeros(model.width, np.float32)}
    return biased, {**variables, "params": {**params, "layers": layers, "ln_f": ln_f}}


def hf_tokenizer_json(text: str) -> str:
    """A saved tokenizer (data/tokenize.py) as a Hugging Face tokenizer.json: a tokenizer.json as it is; a char
    vocabulary as a BPE over those characters with no merges and no pre-tokenizer (each character its own token,
    ids unchanged; a character outside the vocabulary is dropped, as `tokenizers` drops unknown characters without an
    unk token) whose decoder joins the tokens."""
    from learngene_jax.data.tokenize import CharTokenizer, is_char_json

    if not is_char_json(text):
        return text
    from tokenizers import Tokenizer, decoders, models

    chars = CharTokenizer.from_json(text, "tokenizer.json").chars
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tokenizer.decoder = decoders.Fuse()
    return tokenizer.to_str()


def special_token_ids(tokenizer: str | None, generation_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """bos_token_id / eos_token_id / pad_token_id for config.json and generation_config.json: those of the
    generation_config.json the model came with (from-hf keeps it beside the weights), else the single tokens a
    tokenizer.json's post-processor template puts before / after each text, else none."""
    if generation_config:
        return {k: generation_config[k] for k in SPECIAL_IDS if k in generation_config}
    from learngene_jax.data.tokenize import HFTokenizer, is_char_json

    if tokenizer is None or is_char_json(tokenizer):
        return {}
    from tokenizers import Tokenizer

    before, after = HFTokenizer(Tokenizer.from_str(tokenizer), "tokenizer.json").template
    return {key: ids[0] for key, ids in (("bos_token_id", before), ("eos_token_id", after)) if len(ids) == 1}


def hf_tokenizer_config(tokenizer_json: str, model_max_length: int, special: Mapping[str, Any]) -> dict[str, Any]:
    """A tokenizer_config.json that lets AutoTokenizer (transformers 4 and 5) load `tokenizer_json` as a
    PreTrainedTokenizerFast, with its BOS / EOS / pad token text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    out = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
           "clean_up_tokenization_spaces": False}
    for key in SPECIAL_IDS:
        token = tokenizer.id_to_token(special[key]) if isinstance(special.get(key), int) else None
        if token is not None:
            out[key.removesuffix("_id")] = token
    return out


def byte_size(size: int | str) -> int:
    """A shard size as transformers spells it ("5GB" = 5·10⁹ bytes, "500MiB" = 500·2²⁰, or bytes) → bytes."""
    if isinstance(size, int) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*", str(size), re.IGNORECASE)
    if not match:
        fail(ConversionError, f"shard size {size!r} is not a size such as 5GB, 500MB, 2GiB or a number of bytes")
    unit = match.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(match.group(1)) * base ** ("KMGT".index(unit[0]) + 1))


def shard_tensors(tensors: Mapping[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    """The tensors in order, cut into groups of at most `max_bytes` (a bigger tensor alone in its own), as
    save_pretrained cuts its shards (huggingface_hub's split_state_dict_into_shards)."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key, array in tensors.items():
        if shards[-1] and size + array.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = array
        size += array.nbytes
    return shards


def _write_weights(directory: Path, tensors: Mapping[str, np.ndarray], max_bytes: int) -> None:
    """model.safetensors, or model-0000k-of-0000N.safetensors + model.safetensors.index.json above `max_bytes`."""
    from safetensors.numpy import save_file

    shards = shard_tensors(tensors, max_bytes)
    if len(shards) == 1:
        save_file(shards[0], directory / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def to_hf(model: Llama | GPT2, variables: Mapping[str, Any], directory: str | Path, overwrite: bool = False,
          tokenizer: str | None = None, *, dtype: str = "float32", max_shard_size: int | str = "5GB",
          tokenizer_config: Mapping[str, Any] | None = None,
          generation_config: Mapping[str, Any] | None = None) -> Path:
    """Write `directory` as save_pretrained does, for transformers 5 and 4 alike: config.json, the weights in `dtype`
    (float32 or bfloat16) as model.safetensors or, above `max_shard_size`, shards with model.safetensors.index.json,
    generation_config.json, and with a `tokenizer` (its saved tokenizer.json text, `hf_tokenizer_json`)
    tokenizer.json + tokenizer_config.json for AutoTokenizer. `tokenizer_config` and `generation_config`: the ones the
    model came with (from-hf keeps them), written as they are."""
    directory = Path(directory).expanduser()
    if type(model) not in (Llama, GPT2) and not lora.is_lora(model):
        fail(ConversionError, f"{type(model).__name__} is a learngene aux decoder, not a plain Llama / GPT-2: expand "
                              f"its gene into a descendant first (learngene expand --gene WORKDIR/gene --depth N "
                              f"--out DIR), then export that")
    if dtype not in EXPORT_DTYPES:
        fail(ConversionError, f"export dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    max_bytes = byte_size(max_shard_size)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not overwrite)):
        fail(ConversionError, f"{directory} exists and is not an empty directory; choose another --out or pass "
                              f"--overwrite")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(ConversionError, f"cannot create {directory} ({e.strerror})")
    if lora.is_lora(model):  # LoRA adapters are folded into the weights: Hugging Face gets the plain model
        variables = {"params": lora.merge(model, variables["params"])}
        model = lora.plain(model)
    if isinstance(model, GPT2) and not model.bias:
        model, variables = with_zero_biases(model, variables)
    special = special_token_ids(tokenizer, generation_config)
    config = hf_config(model, dtype, special)  # before any file: an unexportable model writes nothing
    for old in [*directory.glob("model*.safetensors"), directory / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # stale weights beside new ones would win in from_pretrained (WEIGHT_FILES)
    rules = LLAMA_RULES if isinstance(model, Llama) else GPT2_RULES
    tensors = {k: np.ascontiguousarray(v, EXPORT_DTYPES[dtype])
               for k, v in flax_to_torch(variables["params"], rules).items()}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_weights(directory, tensors, max_bytes)
    generation = dict(generation_config) if generation_config else {k: v for k, v in special.items() if v is not None}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if tokenizer is not None:
        text = hf_tokenizer_json(tokenizer)
        (directory / "tokenizer.json").write_text(text)
        limit = context_limit(model)[0]
        tok_config = dict(tokenizer_config) if tokenizer_config else hf_tokenizer_config(text, limit, special)
        (directory / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    return directory
