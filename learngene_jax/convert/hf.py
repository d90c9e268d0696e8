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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.convert.state_dict import read_state_dict
from learngene_jax.convert.table import Rule, flax_to_torch, torch_to_flax
from learngene_jax.errors import ConversionError, fail
from learngene_jax.models import lora
from learngene_jax.models.llama import GPT2, Llama, abstract_lm_params

LLAMA_RULES = [
    Rule("model.embed_tokens.weight", "embed"), Rule("model.norm.weight", "norm"),
    Rule("lm_head.weight", "lm_head", "linear"),
    Rule("model.layers.{layer}.input_layernorm.weight", "layers/attn_norm"),
    Rule("model.layers.{layer}.post_attention_layernorm.weight", "layers/mlp_norm"),
    *[Rule(f"model.layers.{{layer}}.self_attn.{n}_proj.weight", f"layers/{n}", "linear") for n in "qkvo"],
    *[Rule(f"model.layers.{{layer}}.mlp.{n}_proj.weight", f"layers/{n}", "linear") for n in ("gate", "up", "down")],
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
GPT2_TOP = ("wte.", "wpe.", "h.", "ln_f.")  # Hub GPT-2 keys without the `transformer.` prefix
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
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(ConversionError, f"{path} is not valid JSON ({e.msg} at line {e.lineno})")


def _rope_theta(cfg: Mapping[str, Any]) -> float:
    params = cfg.get("rope_parameters") or {}
    for section in (params, cfg.get("rope_scaling") or {}):  # transformers 5 / legacy spelling
        kind = section.get("rope_type", section.get("type", "default"))
        if kind not in ("default", None):
            fail(ConversionError, f"rope_type {kind!r} (scaled rotary positions) is not supported; only the default "
                                  f"rotary embedding is")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


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
    if kind == "llama":
        for flag in ("attention_bias", "mlp_bias"):
            if cfg.get(flag):
                fail(ConversionError, f"config.json sets {flag}=true; the Flax Llama has no biases")
        if cfg.get("hidden_act", "silu") != "silu":
            fail(ConversionError, f"config.json sets hidden_act={cfg['hidden_act']!r}; the Flax Llama uses silu")
        heads = int(cfg["num_attention_heads"])
        return Llama(vocab_size=int(cfg["vocab_size"]), width=int(cfg["hidden_size"]),
                     depth=int(cfg["num_hidden_layers"]), num_heads=heads,
                     num_kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=int(cfg.get("head_dim") or 0),
                     mlp_dim=int(cfg["intermediate_size"]), eps=float(cfg.get("rms_norm_eps", 1e-6)),
                     rope_theta=_rope_theta(cfg), max_positions=int(cfg.get("max_position_embeddings", 4096)),
                     tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                     attention_dropout=_drop_rate(cfg, "attention_dropout", 0.0))
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
    fail(ConversionError, f"config.json describes model_type {kind!r}; from-hf reads llama and gpt2 models")


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


def _read_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix != ".safetensors":  # pytorch_model*.bin: torch.load, as transformers does
        return {k: np.asarray(v, np.float32) for k, v in read_state_dict(path).items()}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as f:
            # bfloat16 (ml_dtypes) → float32; safe_open has keys(), no iteration
            return {key: np.asarray(f.get_tensor(key), np.float32) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        fail(ConversionError, f"cannot read {path} ({e}); the file is damaged or incomplete")


def read_weights(directory: str | Path, explicit: str | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the weights file(s) from_pretrained would read in `directory` (`weight_files`), as float32
    numpy; later shards win for a key in several, as in transformers."""
    files, weight_map = weight_files(directory, explicit)
    out = {}
    for path in files:
        out.update(_read_file(path))
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(out))
        if absent:
            fail(ConversionError, f"the shards lack {len(absent)} tensor(s) the index names, e.g. {absent[0]}")
    return out


def from_hf(directory: str | Path) -> tuple[Llama | GPT2, dict[str, Any]]:
    """(model, {'params': ...}) from a Hugging Face LlamaForCausalLM / GPT2LMHeadModel directory."""
    cfg = read_config(directory)
    model = model_from_config(cfg)
    sd = read_weights(directory, cfg.get("transformers_weights"))
    refuse_injected_lora(directory, sd)
    if isinstance(model, GPT2):
        sd = {(f"transformer.{k}" if k.startswith(GPT2_TOP) else k): v for k, v in sd.items()}
    rules = LLAMA_RULES if isinstance(model, Llama) else GPT2_RULES
    if isinstance(model, Llama) and model.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}  # a redundant copy of the tied embedding
    params = torch_to_flax(sd, rules, abstract_lm_params(model), what=f"{directory}")
    return model, {"params": params}


def hf_config(model: Llama | GPT2) -> dict[str, Any]:
    """The config.json transformers builds the same model from."""
    if isinstance(model, Llama):
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": model.vocab_size,
                "hidden_size": model.width, "intermediate_size": model.mlp_dim, "num_hidden_layers": model.depth,
                "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads,
                "head_dim": model.hd, "hidden_act": "silu", "max_position_embeddings": model.max_positions,
                "rms_norm_eps": model.eps, "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_theta},
                "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": model.tie_embeddings,
                "attention_dropout": model.attention_dropout, "dtype": "float32"}
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": model.vocab_size,
            "n_embd": model.width, "n_layer": model.depth, "n_head": model.num_heads, "n_inner": model.mlp_dim or None,
            "n_positions": model.max_positions, "layer_norm_epsilon": model.eps,
            "activation_function": "gelu_new" if model.gelu_approximate else GPT2_EXACT_GELU,
            "tie_word_embeddings": True, "bos_token_id": model.vocab_size - 1, "eos_token_id": model.vocab_size - 1,
            **dict(zip(("embd_pdrop", "attn_pdrop", "resid_pdrop"), model.drop_rates, strict=True)), "dtype": "float32"}


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


def to_hf(model: Llama | GPT2, variables: Mapping[str, Any], directory: str | Path, overwrite: bool = False,
          tokenizer: str | None = None) -> Path:
    """Write `directory` (config.json + model.safetensors) that transformers' from_pretrained loads as is, and the
    model's `tokenizer` (its saved tokenizer.json text, `hf_tokenizer_json`) for PreTrainedTokenizerFast."""
    from safetensors.numpy import save_file

    directory = Path(directory).expanduser()
    if type(model) not in (Llama, GPT2) and not lora.is_lora(model):
        fail(ConversionError, f"{type(model).__name__} is a learngene aux decoder, not a plain Llama / GPT-2: expand "
                              f"its gene into a descendant first (learngene expand --gene WORKDIR/gene --depth N "
                              f"--out DIR), then export that")
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
    rules = LLAMA_RULES if isinstance(model, Llama) else GPT2_RULES
    tensors = flax_to_torch(variables["params"], rules)
    (directory / "config.json").write_text(json.dumps(hf_config(model), indent=2) + "\n")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, directory / "model.safetensors",
              metadata={"format": "pt"})
    if tokenizer is not None:
        (directory / "tokenizer.json").write_text(hf_tokenizer_json(tokenizer))
    return directory
