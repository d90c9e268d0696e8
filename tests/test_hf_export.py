"""to-hf writes what save_pretrained writes and what transformers 5 and 4 both read: θ and rope scaling as
`rope_parameters` (5.x) and as top-level `rope_theta` + `rope_scaling` (4.x), bfloat16 weights on request, shards
with model.safetensors.index.json above a size, generation_config.json, and the tokenizer files (tokenizer.json +
tokenizer_config.json) AutoTokenizer loads. Checked against transformers 5.23 here, against 4.57.1 in a second
environment (slow; skipped with its reason where pip cannot install 4.57.1 offline), and by the config keys both
versions read (fast, no torch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, randomize, run_module

from learngene_jax.convert import hf
from learngene_jax.models.llama import Llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 61
TOKENS = np.random.default_rng(2).integers(0, VOCAB, (2, 13)).astype(np.int32)
LLAMA = dict(vocab_size=VOCAB, width=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=48, max_positions=64, eps=1e-5)
EXPORTS = {  # Flax Llamas as to-hf exports them; each differs from a default Llama in what it names
    "theta_5e5": dict(rope_theta=5e5),  # transformers 4 read 10000 from rope_parameters-only exports: 3.4e-3 off
    "llama3": dict(rope_theta=5e5, rope_type="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
                   rope_high_freq_factor=4.0, rope_original_positions=512, max_positions=4096),
    "linear": dict(rope_type="linear", rope_factor=4.0),
    "dynamic": dict(rope_type="dynamic", rope_factor=2.0, max_positions=8),  # 13 tokens: θ grows
    "biases": dict(qkv_bias=True, out_bias=True, mlp_bias=True),
    "head_dim": dict(head_dim=16, tie_embeddings=True),
    "mistral": dict(model_type="mistral", sliding_window=16, head_dim=16),
    "qwen2": dict(model_type="qwen2", qkv_bias=True, tie_embeddings=True),
}
# transformers 4.57.1's rope_config_validation: the keys each rope_type needs and may have in `rope_scaling` (others
# are warned about)
ROPE_SCALING_4X = {"linear": {"rope_type", "factor"}, "dynamic": {"rope_type", "factor"},
                   "llama3": {"rope_type", "factor", "original_max_position_embeddings", "low_freq_factor",
                              "high_freq_factor"}}


def exported(name, directory, **to_hf):
    """(model, variables) of the EXPORTS case `name` with random params, written to `directory` by to_hf."""
    model = Llama(**{**LLAMA, **EXPORTS[name]})
    variables = {"params": randomize(model.init(jax.random.key(0), jnp.asarray(TOKENS))["params"], seed=1)}
    hf.to_hf(model, variables, directory, **to_hf)
    return model, variables


def rope_as_4x_reads_it(cfg):
    """(θ, scaling) as transformers 4.57.1's LlamaConfig / MistralConfig / Qwen2Config take them: the top-level
    rope_theta (default 10000) and rope_scaling (None: the default rotary embedding)."""
    scaling = cfg.get("rope_scaling") or {"rope_type": "default"}
    return cfg.get("rope_theta", 10000.0), {k: v for k, v in scaling.items() if k != "rope_type"}, scaling["rope_type"]


def rope_as_5x_reads_it(cfg):
    """(θ, scaling) as transformers 5.23's convert_rope_params_to_dict takes them: rope_scaling, else
    rope_parameters; θ inside it, else the top-level rope_theta."""
    params = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    kind = params.pop("rope_type", "default")
    return params.pop("rope_theta"), params, kind


@pytest.mark.parametrize("name", list(EXPORTS))
def test_config_json_says_the_same_model_to_transformers_4_and_5(name, tmp_path):
    model, _ = exported(name, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    theta4, scaling4, kind4 = rope_as_4x_reads_it(cfg)
    theta5, scaling5, kind5 = rope_as_5x_reads_it(cfg)
    assert theta4 == theta5 == model.rope_theta and kind4 == kind5 == model.rope_type
    assert scaling4 == scaling5
    if model.rope_type == "default":
        assert cfg["rope_scaling"] is None
    else:
        assert set(cfg["rope_scaling"]) == ROPE_SCALING_4X[model.rope_type]  # nothing 4.x warns about
        assert isinstance(cfg["rope_scaling"]["factor"], float)  # 4.x warns on an int factor
    assert cfg["head_dim"] == model.hd and cfg["max_position_embeddings"] == model.max_positions
    assert cfg["dtype"] == cfg["torch_dtype"] == "float32"  # 4.56+ and older 4.x spellings
    if model.model_type == "llama":
        assert (cfg["attention_bias"], cfg["mlp_bias"]) == (model.qkv_bias, model.mlp_bias)
    if model.model_type == "qwen2":
        assert not cfg["use_sliding_window"]
    if model.model_type == "mistral":
        assert cfg["sliding_window"] == model.sliding_window
    assert hf.model_from_config(cfg) == model  # and from-hf reads back the same model


def test_bfloat16_shards_with_an_index(tmp_path):
    model, variables = exported("llama3", tmp_path / "hf", dtype="bfloat16", max_shard_size="20KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    assert all((tmp_path / "hf" / s).stat().st_size <= 20_000 + 2_000 for s in shards)  # + the JSON header
    assert index["metadata"]["total_size"] == sum(2 * int(np.prod(np.shape(v)))
                                                  for v in jax.tree_util.tree_leaves(variables))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    _, back = hf.from_hf(tmp_path / "hf")
    rounded = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(jnp.bfloat16).astype(np.float32), variables)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, rounded)
    with pytest.raises(Exception, match="shard size"):
        hf.to_hf(model, variables, tmp_path / "x", max_shard_size="lots")


def test_overwrite_leaves_no_stale_weights(tmp_path):
    exported("linear", tmp_path / "hf", max_shard_size="20KB")
    model, variables = exported("linear", tmp_path / "hf", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "hf").glob("model*")) == ["model.safetensors"]
    _, back = hf.from_hf(tmp_path / "hf")
    np.testing.assert_array_equal(back["params"]["embed"], variables["params"]["embed"])


def bpe_tokenizer_json():
    """A tiny BPE (ids below VOCAB) whose post-processor puts <s> before every text, as Llama's tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 10, special_tokens=["<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(["the cat sat on the mat", "a dog ran far"] * 20, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tokenizer.to_str()


TEXT = "the cat ran"


@pytest.mark.torch
def test_tokenizer_and_generation_config_load_in_transformers(tmp_path):
    from tokenizers import Tokenizer

    from learngene_jax.torch_ref import import_transformers

    transformers = import_transformers()
    text = bpe_tokenizer_json()
    model, _ = exported("theta_5e5", tmp_path / "hf", tokenizer=text)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (0, None)  # the template's BOS; no EOS in the template
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok(TEXT)["input_ids"] == Tokenizer.from_str(text).encode(TEXT).ids
    assert tok.bos_token == "<s>" and tok.model_max_length == model.max_positions
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "hf")
    assert generation.bos_token_id == 0 and generation.eos_token_id is None


@pytest.mark.torch
def test_cli_keeps_the_tokenizer_and_generation_config_of_a_hugging_face_directory(tmp_path):
    from learngene_jax.torch_ref import import_transformers

    transformers = import_transformers()
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")  # writes generation_config.json
    (tmp_path / "hf" / "tokenizer.json").write_text(bpe_tokenizer_json())
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}))
    run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "hf"), "--out", str(tmp_path / "m"))
    for name in hf.HF_SIDE_FILES:
        assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()
    run_module("learngene_jax.convert", "to-hf", "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "back"),
               "--dtype", "bfloat16", "--max-shard-size", "10KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert json.loads((tmp_path / "back" / name).read_text()) == json.loads((tmp_path / "hf" / name).read_text())
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["dtype"]) == (0, 1, "bfloat16")
    assert (tmp_path / "back" / "model.safetensors.index.json").is_file()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "back").eos_token == "</s>"


# -- transformers 4.57.1 in a second environment ---------------------------------------------------------------
TRANSFORMERS_4 = ("transformers==4.57.1", "huggingface-hub==0.36.2", "tokenizers==0.22.2")
READ_WITH_4X = r"""
import json, logging, sys
import numpy as np, torch
from learngene_jax.torch_ref import import_transformers  # torchvision's op stand-ins, as in this environment
transformers = import_transformers()
assert transformers.__version__ == "4.57.1", transformers.__version__
warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("transformers").addHandler(handler)
out = {}
for name, spec in json.loads(sys.argv[1]).items():
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["dir"], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor(np.load(spec["tokens"]), dtype=torch.long)).logits.numpy()
    out[name] = {"class": type(model).__name__, "max_diff": float(np.abs(logits - np.load(spec["logits"])).max())}
    if spec.get("text"):
        out[name]["ids"] = transformers.AutoTokenizer.from_pretrained(spec["dir"])(spec["text"])["input_ids"]
out["warnings"] = warnings
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def transformers_4():
    """A folder holding transformers 4.57.1 and the huggingface-hub / tokenizers it needs, to put first on a
    subprocess's PYTHONPATH beside this environment's torch; pip installs it once into the user cache from its
    configured (local) index or PIP_FIND_LINKS, without retrying the network. Skipped, saying why, where it cannot."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "learngene_jax" / "transformers-4.57.1"
    if not (cache / "INSTALLED").is_file():
        pytest.importorskip("torch")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input",
                               "--timeout", "15", "--retries", "0", "--target", str(cache), *TRANSFORMERS_4],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            pytest.skip(f"transformers 4.57.1 is not installable offline here (pip: {lines[-1] if lines else '?'})")
        (cache / "INSTALLED").write_text(" ".join(TRANSFORMERS_4) + "\n")
    return cache


@pytest.mark.slow
@pytest.mark.torch
def test_exports_load_in_transformers_4_as_the_same_model(transformers_4, tmp_path):
    specs = {}
    for name in [*EXPORTS, "bf16_sharded"]:
        d = tmp_path / name
        if name == "bf16_sharded":
            model, variables = exported("llama3", d, dtype="bfloat16", max_shard_size="20KB")
            variables = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(jnp.bfloat16).astype(np.float32),
                                               variables)
        else:
            model, variables = exported(name, d, tokenizer=bpe_tokenizer_json() if name == "theta_5e5" else None)
        np.save(d / "tokens.npy", TOKENS)
        np.save(d / "logits.npy", np.asarray(model.apply(variables, jnp.asarray(TOKENS))))
        specs[name] = {"dir": str(d), "tokens": str(d / "tokens.npy"), "logits": str(d / "logits.npy"),
                       "text": TEXT if name == "theta_5e5" else None}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(transformers_4), str(REPO)]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning"}
    proc = subprocess.run([sys.executable, "-c", READ_WITH_4X, json.dumps(specs)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in specs:
        kind = EXPORTS.get(name, {}).get("model_type", "llama")
        assert got[name]["class"] == hf.ARCHITECTURES[kind], got[name]
        assert got[name]["max_diff"] <= 1e-5, (name, got[name])
    from tokenizers import Tokenizer

    assert got["theta_5e5"]["ids"] == Tokenizer.from_str(bpe_tokenizer_json()).encode(TEXT).ids
    assert not got["warnings"], got["warnings"]
