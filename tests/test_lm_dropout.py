"""Dropout in the decoder LMs: GPT-2's embd/attn/resid_pdrop (Hugging Face's names and defaults, nanoGPT's single
`dropout`), Llama's attention_dropout and PEFT's lora_dropout act in training only, each where transformers / PEFT
put it; rate 0 trains exactly as evaluation computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import lm_smoke_config

from learngene_jax.convert import hf
from learngene_jax.errors import ConfigError, ConversionError
from learngene_jax.models import lora
from learngene_jax.models.llama import GPT2, Llama

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 12)), jnp.int32)
LLAMA = Llama(vocab_size=64, width=16, depth=2, num_heads=2, num_kv_heads=1, mlp_dim=24, max_positions=16)
GPT = GPT2(vocab_size=64, width=16, depth=2, num_heads=2, max_positions=16)
CASES = {"llama attention_dropout": (LLAMA, {"attention_dropout": 0.3}), "gpt2 embd_pdrop": (GPT, {"embd_pdrop": 0.3}),
         "gpt2 attn_pdrop": (GPT, {"attn_pdrop": 0.3}), "gpt2 resid_pdrop": (GPT, {"resid_pdrop": 0.3}),
         "gpt2 dropout (nanoGPT: all three)": (GPT, {"dropout": 0.3})}


def _apply(model, variables, train, seed=0):
    return np.asarray(model.apply(variables, TOKENS, train=train, rngs={"dropout": jax.random.key(seed)}))


@pytest.mark.parametrize("case", list(CASES))
def test_dropout_changes_training_outputs_not_evaluation_and_rate_zero_is_exact(case):
    model, rates = CASES[case]
    variables = model.init(jax.random.key(0), TOKENS)
    dropped = model.clone(**rates)
    evaluated = _apply(model, variables, train=False)
    np.testing.assert_array_equal(_apply(dropped, variables, train=False), evaluated)
    np.testing.assert_array_equal(_apply(model, variables, train=True), evaluated)  # rate 0: bit for bit
    trained = _apply(dropped, variables, train=True)
    assert np.abs(trained - evaluated).max() > 1e-3
    assert not np.array_equal(trained, _apply(dropped, variables, train=True, seed=1))  # masks follow the rng


@pytest.mark.parametrize("base, targets", [(LLAMA, ("q", "v", "down")), (GPT, ("c_attn", "mlp_proj"))])
def test_lora_dropout_drops_only_the_adapters_input(base, targets):
    model = lora.with_lora(base, 2, 4.0, targets, dropout=0.5)
    fresh = model.init(jax.random.key(0), TOKENS)  # B = 0: the adapters add nothing, their input dropped or not
    np.testing.assert_array_equal(_apply(model, fresh, train=True), _apply(model, fresh, train=False))
    adapters = {k: v + 0.3 * jax.random.normal(jax.random.key(i), v.shape)
                for i, (k, v) in enumerate(fresh["params"]["lora"].items())}
    trained = {"params": {**fresh["params"], "lora": adapters}}
    evaluated = _apply(model, trained, train=False)
    np.testing.assert_array_equal(_apply(model.clone(lora_dropout=0.0), trained, train=False), evaluated)
    np.testing.assert_array_equal(_apply(model.clone(lora_dropout=0.0), trained, train=True), evaluated)
    assert np.abs(_apply(model, trained, train=True) - evaluated).max() > 1e-3


@pytest.mark.torch
def test_hugging_face_dropout_settings_are_read_with_their_defaults_and_written():
    from learngene_jax.torch_ref import import_transformers

    transformers = import_transformers()
    gpt2 = dict(model_type="gpt2", vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=16)
    defaults = transformers.GPT2Config()
    assert hf.model_from_config(gpt2).drop_rates == (defaults.embd_pdrop, defaults.attn_pdrop, defaults.resid_pdrop)
    set_ = hf.model_from_config({**gpt2, "embd_pdrop": 0.0, "attn_pdrop": 0.2, "resid_pdrop": 0.05})
    assert set_.drop_rates == (0.0, 0.2, 0.05)
    written = transformers.GPT2Config(**hf.hf_config(set_))
    assert (written.embd_pdrop, written.attn_pdrop, written.resid_pdrop) == (0.0, 0.2, 0.05)
    assert hf.hf_config(GPT)["resid_pdrop"] == 0.0  # a model without dropout says so (transformers would use 0.1)
    llama = dict(model_type="llama", vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                 num_attention_heads=2)
    assert hf.model_from_config(llama).attention_dropout == transformers.LlamaConfig().attention_dropout == 0.0
    read = hf.model_from_config({**llama, "attention_dropout": 0.25})
    assert transformers.LlamaConfig(**hf.hf_config(read)).attention_dropout == 0.25
    with pytest.raises(ConversionError, match="attn_pdrop=1.0; a dropout probability lies in"):
        hf.model_from_config({**gpt2, "attn_pdrop": 1.0})


def _lm_config(**changes):
    return lm_smoke_config(**{"max_steps": 2, **changes})


def test_the_trainer_drops_lora_inputs_in_training_steps_and_not_in_evaluation(tmp_path):
    from learngene_jax.models.io import save_model
    from learngene_jax.train import train

    base = LLAMA.clone(vocab_size=256)
    base_dir = save_model(tmp_path / "base", base, base.init(jax.random.key(0), TOKENS))
    runs = {rate: train(_lm_config(init=str(base_dir), eval_every_steps=1, eval_at_start=True,
                                   **{"lora.rank": 2, "lora.dropout": rate}), tmp_path / f"run{rate}")
            for rate in (0.0, 0.5)}
    plain, dropped = ([c["loss"] for c in runs[rate]["curve"]] for rate in (0.0, 0.5))
    assert plain[0] == dropped[0]  # the same adapters evaluated without dropout
    assert plain[1] != dropped[1]  # one step with the adapters' input dropped moves them elsewhere
    with pytest.raises(ConfigError, match="lora.dropout must be a probability in \\[0, 1\\)"):
        train(_lm_config(init=str(base_dir), **{"lora.rank": 2, "lora.dropout": 1.0}), tmp_path / "bad")
