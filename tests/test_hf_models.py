"""The checkpoints people use today against transformers 5.23 on random tiny models, both ways (from-hf of a
save_pretrained directory, and to-hf loaded by from_pretrained with no missing/unexpected keys), logits within 1e-5:
Llama 3.x rope_scaling (llama3), linear and dynamic RoPE scaling, attention_bias / mlp_bias, an explicit head_dim,
Mistral (sliding window wider than the context) and Qwen2 (q/k/v biases, a windowed variant); a config.json in
transformers 4's spelling (top-level rope_theta + rope_scaling); Gemma and Phi as one-line errors naming them."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize, run_module

from learngene_jax.convert import hf
from learngene_jax.errors import ConversionError
from learngene_jax.models.llama import check_context
from learngene_jax.models.vit import count_params

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 53
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 13))
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5)
# (config class, kwargs, the Flax fields it must give): each case differs from a default Llama in what it names
CASES = {
    # wavelengths 6.3 (kept: < 512/4), 167 (smoothed), 4443 and 118k (divided by 8) for head_dim 8, θ = 5e5
    "llama3": ("LlamaConfig", dict(BASE, max_position_embeddings=4096, rope_parameters={
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 512}), dict(rope_type="llama3", rope_original_positions=512)),
    "linear": ("LlamaConfig", dict(BASE, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}),
               dict(rope_type="linear", rope_factor=4.0)),
    # 13 tokens > max_position_embeddings 8: θ grows with the sequence (dynamic NTK), reach 2 × 8
    "dynamic": ("LlamaConfig", dict(BASE, max_position_embeddings=8, rope_parameters={
        "rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}), dict(rope_type="dynamic", rope_factor=2.0)),
    "biases": ("LlamaConfig", dict(BASE, attention_bias=True, mlp_bias=True),
               dict(qkv_bias=True, out_bias=True, mlp_bias=True)),
    "head_dim": ("LlamaConfig", dict(BASE, head_dim=16, tie_word_embeddings=True), dict(head_dim=16)),
    "mistral": ("MistralConfig", dict(BASE, sliding_window=16, head_dim=16),
                dict(model_type="mistral", sliding_window=16)),
    "qwen2": ("Qwen2Config", dict(BASE, tie_word_embeddings=True), dict(model_type="qwen2", qkv_bias=True)),
    "qwen2_window": ("Qwen2Config", dict(BASE, use_sliding_window=True, sliding_window=16, max_window_layers=1),
                     dict(model_type="qwen2", sliding_window=16)),
}


@pytest.fixture(scope="module")
def transformers():
    from learngene_jax.torch_ref import import_transformers

    return import_transformers()


def hf_model(transformers, case, seed=0):
    """A random model with every weight perturbed (zero biases and unit norms would hide mapping mistakes)."""
    import torch

    cls, kwargs, _ = CASES[case]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def hf_logits(model, tokens):
    import torch

    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_from_hf_gives_transformers_logits(transformers, case, tmp_path):
    ref = hf_model(transformers, case)
    ref.save_pretrained(tmp_path / "hf")
    model, variables = hf.from_hf(tmp_path / "hf")
    for field, value in CASES[case][2].items():
        assert getattr(model, field) == value, (field, getattr(model, field))
    got = np.asarray(model.apply(variables, jnp.asarray(TOKENS)))
    want = hf_logits(ref, TOKENS)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert count_params(variables["params"]) == sum(p.numel() for p in ref.parameters())
    # what the case names matters: the same weights without it give other logits
    plain = model.clone(rope_type="default", qkv_bias=False, out_bias=False, mlp_bias=False)
    if plain != model:
        layers = {k: v for k, v in variables["params"]["layers"].items() if not k.endswith("_bias")}
        other = plain.apply({"params": {**variables["params"], "layers": layers}}, jnp.asarray(TOKENS))
        assert np.abs(np.asarray(other) - want).max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_to_hf_loads_in_transformers_as_the_same_model(transformers, case, tmp_path, caplog):
    hf_model(transformers, case).save_pretrained(tmp_path / "ref")
    model, _ = hf.from_hf(tmp_path / "ref")  # the architecture
    variables = {"params": randomize(model.init(jax.random.key(3), jnp.asarray(TOKENS))["params"], seed=4)}
    hf.to_hf(model, variables, tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert type(loaded).__name__ == hf.ARCHITECTURES[model.model_type]
    np.testing.assert_allclose(hf_logits(loaded.eval(), TOKENS), np.asarray(model.apply(variables, TOKENS)),
                               rtol=0, atol=1e-5)
    back, again = hf.from_hf(tmp_path / "out")
    assert back == model
    np.testing.assert_array_equal(again["params"]["layers"]["q"], variables["params"]["layers"]["q"])


def test_a_config_in_transformers_4_spelling_reads_as_transformers_5_reads_it(transformers, tmp_path):
    """Hub configs written by transformers 4: top-level rope_theta, rope_scaling with `type` (older) or rope_type."""
    ref = hf_model(transformers, "linear")
    ref.save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rope_theta=1e4, rope_scaling={"type": "linear", "factor": 4.0})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model, variables = hf.from_hf(tmp_path / "hf")
    assert (model.rope_type, model.rope_factor, model.rope_theta) == ("linear", 4.0, 1e4)
    np.testing.assert_allclose(np.asarray(model.apply(variables, jnp.asarray(TOKENS))), hf_logits(loaded, TOKENS),
                               rtol=0, atol=1e-5)


def test_a_sliding_window_narrower_than_the_context_is_a_one_line_error(transformers, tmp_path):
    ref = hf_model(transformers, "mistral")
    ref.config.sliding_window = 8
    ref.save_pretrained(tmp_path / "hf")
    model, _ = hf.from_hf(tmp_path / "hf")
    check_context(model, 8)
    with pytest.raises(ValueError, match="sliding_window=8"):
        check_context(model, 9)
    np.save(tmp_path / "ids.npy", TOKENS.astype(np.int32))
    proc = run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "hf"), "--tokens",
                      str(tmp_path / "ids.npy"), "--out", str(tmp_path / "logits.npy"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "sliding_window=8" in proc.stderr and "at most 8 tokens" in proc.stderr


@pytest.mark.parametrize("model_type, name", [("gemma", "Gemma"), ("gemma2", "Gemma"), ("phi", "Phi"),
                                              ("phi3", "Phi"), ("falcon", "reads llama, mistral, qwen2 and gpt2")])
def test_gemma_and_phi_are_named_as_unsupported(transformers, tmp_path, model_type, name):
    hf_model(transformers, "qwen2").save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "model_type": model_type}))
    with pytest.raises(ConversionError, match=f"model_type '{model_type}'.*{name}"):
        hf.from_hf(tmp_path / "hf")
    proc = run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "hf"), "--out",
                      str(tmp_path / "m"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and name in proc.stderr


@pytest.mark.parametrize("text, kind", [("[]", "list"), ('"str"', "str"), ("3", "int")])
def test_a_config_json_that_is_not_an_object_is_one_line(tmp_path, text, kind):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(text)
    with pytest.raises(ConversionError, match=f"holds a JSON {kind}, not the object"):
        hf.from_hf(tmp_path / "hf")
    if kind == "list":
        proc = run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "hf"), "--out",
                          str(tmp_path / "m"), check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and "holds a JSON list" in proc.stderr


@pytest.mark.parametrize("edit, message", [
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}), "rope_type 'yarn'"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}), "low_freq_factor"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    (dict(hidden_act="gelu"), "hidden_act"),
])
def test_unsupported_llama_options_are_one_line_errors(transformers, tmp_path, edit, message):
    hf_model(transformers, "biases").save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(ConversionError, match=message):
        hf.from_hf(tmp_path / "hf")


def test_a_model_its_architecture_cannot_hold_is_refused_before_writing(tmp_path):
    from learngene_jax.models.llama import Llama

    model = Llama(vocab_size=VOCAB, width=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=48, qkv_bias=True)
    variables = model.init(jax.random.key(0), jnp.asarray(TOKENS))
    with pytest.raises(ConversionError, match="qwen2: q, k, v only"):
        hf.to_hf(model, variables, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()
    hf.to_hf(model.clone(model_type="qwen2"), variables, tmp_path / "out", overwrite=True)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen2"
