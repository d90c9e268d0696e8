"""from-hf reads the directory layouts transformers writes and leaves behind exactly as `from_pretrained` does
(transformers 5.23 `_get_resolved_checkpoint_files`): same file precedence, only the shards an index names, PyTorch
.bin files single and sharded; logits equal transformers' on the same directory (1e-5)."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert import hf
from learngene_jax.models.io import load_model

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 61
TOKENS = np.random.default_rng(1).integers(0, VOCAB, (2, 9))
SHARD = "20KB"  # several shards for these tiny models


@pytest.fixture(scope="module")
def transformers():
    from learngene_jax.torch_ref import import_transformers

    return import_transformers()


def tiny(transformers, arch, seed):
    import torch

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
        return transformers.LlamaForCausalLM(cfg).eval()
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
                                  eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def save_bin(model, path, max_shard_size="5GB"):
    """What `save_pretrained(safe_serialization=False)` wrote before transformers 5 (which always writes
    safetensors): pytorch_model.bin, or pytorch_model-0000k-of-0000N.bin shards + pytorch_model.bin.index.json."""
    from huggingface_hub import save_torch_state_dict

    model.config.save_pretrained(path)
    save_torch_state_dict(model.state_dict(), path, safe_serialization=False, max_shard_size=max_shard_size)


def _stale_index_beside_single(new, old, d):  # re-saving a sharded model whole keeps the old index
    new.save_pretrained(d, max_shard_size=SHARD)
    new.save_pretrained(d)
    assert (d / "model.safetensors.index.json").is_file()


def _stale_single_beside_shards(new, old, d):  # re-saving a whole model sharded keeps model.safetensors: it wins
    old.save_pretrained(d)
    new.save_pretrained(d, max_shard_size=SHARD)
    assert (d / "model.safetensors").is_file()


def _older_shard_set_beside_newer(new, old, d):  # e.g. copied over a snapshot: only the index's shards count
    old.save_pretrained(d.parent / "older", max_shard_size="10KB")
    new.save_pretrained(d, max_shard_size=SHARD)
    for f in (d.parent / "older").glob("model-*-of-*.safetensors"):
        if not (d / f.name).exists():
            shutil.copy(f, d / f.name)


def _explicit_transformers_weights(new, old, d):  # config.json's transformers_weights overrides the order
    old.save_pretrained(d)
    new.save_pretrained(d, max_shard_size=SHARD)
    import json

    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "transformers_weights": "model.safetensors.index.json"}))


def _bin_beside_safetensors(new, old, d):
    new.save_pretrained(d)
    save_bin(old, d / "bin")
    shutil.copy(d / "bin" / "pytorch_model.bin", d / "pytorch_model.bin")


LAYOUTS = {
    "single": lambda new, old, d: new.save_pretrained(d),
    "sharded": lambda new, old, d: new.save_pretrained(d, max_shard_size=SHARD),
    "stale_index_beside_single": _stale_index_beside_single,
    "stale_single_beside_shards": _stale_single_beside_shards,
    "older_shard_set_beside_newer": _older_shard_set_beside_newer,
    "explicit_transformers_weights": _explicit_transformers_weights,
    "bin": lambda new, old, d: save_bin(new, d),
    "bin_sharded": lambda new, old, d: save_bin(new, d, max_shard_size=SHARD),
    "bin_beside_safetensors": _bin_beside_safetensors,
}


def logits_of(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_from_hf_reads_what_from_pretrained_reads(transformers, tmp_path, layout, arch):
    new, old = tiny(transformers, arch, 0), tiny(transformers, arch, 1)
    d = tmp_path / "hf"
    d.mkdir()
    LAYOUTS[layout](new, old, d)
    if layout == "bin_sharded":
        assert (d / "pytorch_model.bin.index.json").is_file() and not (d / "pytorch_model.bin").exists()
    ref, info = type(new).from_pretrained(d, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    want = logits_of(ref.eval())
    model, variables = hf.from_hf(d)
    np.testing.assert_allclose(np.asarray(model.apply(variables, jnp.asarray(TOKENS))), want, rtol=0, atol=1e-5)
    # the files transformers picked are the ones that matter: the two models differ
    assert not np.allclose(logits_of(new), logits_of(old), atol=1e-3)


def test_cli_from_hf_takes_a_directory_with_a_stale_index(transformers, tmp_path):
    new = tiny(transformers, "llama", 0)
    _stale_index_beside_single(new, None, tmp_path / "hf")
    run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "hf"), "--out", str(tmp_path / "m"))
    model, variables = load_model(tmp_path / "m")
    np.testing.assert_allclose(np.asarray(model.apply(variables, jnp.asarray(TOKENS))), logits_of(new),
                               rtol=0, atol=1e-5)


def test_no_weights_file_and_a_bad_transformers_weights_are_one_line_errors(transformers, tmp_path):
    new = tiny(transformers, "gpt2", 0)
    new.config.save_pretrained(tmp_path / "empty")
    proc = run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "empty"), "--out",
                      str(tmp_path / "m"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "pytorch_model.bin.index.json" in proc.stderr
    from learngene_jax.errors import ConversionError

    new.save_pretrained(tmp_path / "hf")
    with pytest.raises(ConversionError, match="transformers_weights"):
        hf.read_weights(tmp_path / "hf", "../elsewhere.safetensors")
    with pytest.raises(ConversionError, match="transformers_weights"):
        hf.read_weights(tmp_path / "hf", "pytorch_model.bin")
