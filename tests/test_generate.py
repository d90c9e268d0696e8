"""KV-cached generation (models/generation.py, models/kv_cache.py) against transformers on random tiny Llama and
GPT-2 models: the cached logits against the full forward, greedy generation token for token (a batch of prompts of
different lengths, left-padded; an EOS stop per sequence and the early end), the sampling filters' kept sets against
transformers' logits warpers, draws that never leave them, `learngene generate` and its one-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert import hf
from learngene_jax.models.generation import filter_logits, generate, left_pad
from learngene_jax.models.kv_cache import init_cache

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 97
CONFIGS = {
    "llama": dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0),
    "gpt2": dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64),
}
PROMPTS = [list(np.random.default_rng(1).integers(1, VOCAB, n)) for n in (7, 3, 5)]
NEW = 10


@pytest.fixture(scope="module")
def transformers():
    from learngene_jax.torch_ref import import_transformers

    return import_transformers()


@pytest.fixture(scope="module")
def pairs(transformers, tmp_path_factory):
    """{kind: (transformers model, flax model, variables)}: random models without BOS/EOS/pad ids in their configs
    (each test names its own)."""
    import torch

    out = {}
    for kind, kw in CONFIGS.items():
        torch.manual_seed(0)
        ids = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
        ref = (transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw, **ids)) if kind == "llama" else
               transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw, **ids))).eval()
        path = tmp_path_factory.mktemp(kind)
        ref.save_pretrained(path)
        out[kind] = (ref, *hf.from_hf(path))
    return out


def hf_generate(ref, prompts, pad, **kw):
    import torch

    tokens, mask = left_pad(prompts, pad)
    with torch.no_grad():
        return ref.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask), do_sample=False,
                            pad_token_id=pad, **kw).numpy()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_cached_logits_equal_the_full_forward(pairs, kind):
    _, model, variables = pairs[kind]
    tokens, mask = left_pad(PROMPTS, 0)
    b, t = tokens.shape
    more = np.random.default_rng(2).integers(0, VOCAB, (b, 4))
    cache = init_cache(model.depth, b, t + 4, *((model.num_kv_heads, model.hd) if kind == "llama" else
                                                (model.num_heads, model.width // model.num_heads)), jnp.float32)
    logits, cache = model.apply(variables, jnp.asarray(tokens), jnp.asarray(mask), cache=cache)
    steps = [logits]
    for i in range(4):  # one-token decode steps
        step, cache = model.apply(variables, jnp.asarray(more[:, i:i + 1]), cache=cache)
        steps.append(step)
    cached = np.concatenate(steps, axis=1)
    assert int(cache.index) == t + 4
    for row, prompt in enumerate(PROMPTS):  # each sequence alone, unpadded, through the plain forward
        full = np.asarray(model.apply(variables, jnp.asarray([list(prompt) + list(more[row])])))[0]
        np.testing.assert_allclose(cached[row, t - len(prompt):], full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_greedy_batch_of_different_lengths_equals_transformers(pairs, kind):
    ref, model, variables = pairs[kind]
    want = hf_generate(ref, PROMPTS, 0, max_new_tokens=NEW)
    got = generate(model, variables, PROMPTS, NEW, pad_id=0)
    assert got.shape == want.shape == (3, 7 + NEW)
    np.testing.assert_array_equal(got, want)
    single = generate(model, variables, [PROMPTS[1]], NEW)  # unpadded: the same continuation
    np.testing.assert_array_equal(single[0, 3:], got[1, 7:])


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_eos_stops_each_sequence_as_transformers(pairs, kind):
    ref, model, variables = pairs[kind]
    free = generate(model, variables, PROMPTS, NEW, pad_id=0)[:, 7:]
    one = int(free[1, 2])  # row 1 stops at its third new token; the others go on unless they emit it
    got = generate(model, variables, PROMPTS, NEW, eos_id=one, pad_id=0)
    np.testing.assert_array_equal(got, hf_generate(ref, PROMPTS, 0, max_new_tokens=NEW, eos_token_id=one))
    assert (got[1, 7 + 3:] == 0).all()
    every = sorted({int(free[r, 1]) for r in range(3)})  # every row stops by its second token: generation ends early
    got = generate(model, variables, PROMPTS, NEW, eos_id=every, pad_id=0)
    np.testing.assert_array_equal(got, hf_generate(ref, PROMPTS, 0, max_new_tokens=NEW, eos_token_id=every))
    assert got.shape[1] <= 7 + 2


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 5, 1.0), (0.7, 0, 0.9), (1.3, 10, 0.5), (0.5, 3, 0.3),
                                                       (2.0, 0, 1.0), (1.0, 200, 0.999)])
def test_filters_keep_what_the_transformers_warpers_keep(transformers, temperature, top_k, top_p):
    import torch
    from transformers.generation import logits_process as lp

    logits = np.random.default_rng(3).standard_normal((64, VOCAB)).astype(np.float32) * 3
    warpers = [lp.TemperatureLogitsWarper(temperature)]
    warpers += [lp.TopKLogitsWarper(top_k)] if top_k else []
    warpers += [lp.TopPLogitsWarper(top_p)] if top_p < 1 else []
    want = torch.tensor(logits)
    for warper in warpers:
        want = warper(None, want)
    want = want.numpy()
    got = np.asarray(filter_logits(jnp.asarray(logits), temperature, top_k, top_p))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-6)


def test_draws_never_leave_the_kept_set():
    logits = jnp.asarray(np.random.default_rng(4).standard_normal((4, VOCAB)).astype(np.float32))
    keys = jax.random.split(jax.random.key(0), 2000)
    for top_k, top_p in ((5, 1.0), (0, 0.6), (8, 0.8)):
        filtered = filter_logits(logits, 1.0, top_k, top_p)
        kept = np.isfinite(np.asarray(filtered))
        draws = np.asarray(jax.vmap(jax.random.categorical, in_axes=(0, None))(keys, filtered))  # (2000, 4)
        for row in range(4):
            assert set(draws[:, row]) <= set(np.flatnonzero(kept[row])), (top_k, top_p, row)
        assert (kept.sum(1) <= (top_k or VOCAB)).all()
    top5 = np.argsort(-np.asarray(logits), axis=1)[:, :5]
    assert all(set(np.flatnonzero(k)) == set(t) for k, t in zip(np.isfinite(filter_logits(logits, 1.0, 5)), top5,
                                                                   strict=True))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_sampling_limits_are_greedy_and_a_seed_repeats(pairs, kind):
    _, model, variables = pairs[kind]
    greedy = generate(model, variables, PROMPTS, NEW)
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(generate(model, variables, PROMPTS, NEW, temperature=1e-6, rng=key), greedy)
        np.testing.assert_array_equal(generate(model, variables, PROMPTS, NEW, temperature=1.5, top_k=1, rng=key),
                                      greedy)
    first = generate(model, variables, PROMPTS, NEW, temperature=1.0, top_p=0.9, rng=jax.random.key(7))
    again = generate(model, variables, PROMPTS, NEW, temperature=1.0, top_p=0.9, rng=jax.random.key(7))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=-1.0), "temperature must be"),
    (dict(temperature=float("nan")), "temperature must be"),
    (dict(temperature=1e-38), r"temperature must be 0 \(greedy\) or >= 1e-6"),
    (dict(top_k=-2), "top_k must be"),
    (dict(top_p=0.0), "top_p must lie in"),
    (dict(top_p=1.5), "top_p must lie in"),
    (dict(eos_id=VOCAB), "lie outside the vocabulary"),
    (dict(max_new_tokens=-1), "max_new_tokens must be"),
    (dict(prompts=[[1, 2], []]), "at least one token"),
    (dict(prompts=np.array([[1, 2, 3]]), prompt_mask=np.array([[1, 1, 0]])), "left padding"),
    (dict(prompts=[[1, 2, VOCAB]]), "token ids must lie in"),
    (dict(max_new_tokens=60), "exceed"),
])
def test_bad_prompts_and_settings_are_errors(pairs, kw, message):
    _, model, variables = pairs["gpt2"]
    kw = {"prompts": PROMPTS, "max_new_tokens": 4, **kw}
    with pytest.raises(ValueError, match=message):
        generate(model, variables, kw.pop("prompts"), kw.pop("max_new_tokens"), **kw)


@pytest.fixture(scope="module")
def byte_model(transformers, tmp_path_factory):
    """A random GPT-2 with a byte vocabulary (300 rows) and 16 positions, saved as a Hugging Face directory."""
    import torch

    torch.manual_seed(1)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2,
                                                               n_positions=16, bos_token_id=None, eos_token_id=None))
    path = tmp_path_factory.mktemp("bytes_gpt2")
    ref.eval().save_pretrained(path)
    return ref, path


def test_generate_command_continues_prompts_as_transformers(byte_model, tmp_path):
    ref, path = byte_model
    proc = run_module("learngene_jax", "generate", "--model-dir", str(path), "--tokenizer", "bytes", "--prompt",
                      "hello", "--prompt", "ab", "--max-new-tokens", "6", "--out", str(tmp_path / "out.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    want = hf_generate(ref, [list(b"hello"), list(b"ab")], 0, max_new_tokens=6)[:, 5:]
    assert [r["ids"] for r in records] == want.tolist()
    assert [r["stop"] for r in records] == ["length", "length"] and records[1]["prompt"] == "ab"
    assert proc.stdout.splitlines()[0].startswith("hello")


@pytest.mark.parametrize("flags, needles", [
    (["--prompt", "x" * 12, "--max-new-tokens", "8"], ["20 tokens per sequence exceed", "n_positions=16",
                                                        "shorten the prompts"]),
    (["--prompt", "hi", "--top-p", "0"], ["--top-p must lie in (0, 1]"]),
    (["--prompt", "hi", "--temperature", "-0.5"], ["--temperature must be a finite number >= 0"]),
    (["--prompt", "hi", "--eos", "300"], ["lie outside the vocabulary 0..299"]),
    (["--prompt", "hi", "--temperature", "1e-38"], ["--temperature must be 0 (greedy) or >= 1e-6"]),
    (["--prompt", "hi", "--out", "DIR"], ["--out:", "is a directory"]),
    (["--prompt", "h\u00e9", "--tokenizer", "CHARS"], ["outside the 300 characters", "'é'"]),
])
def test_generate_command_bad_input_is_one_line(byte_model, tmp_path, flags, needles):
    from learngene_jax.data.tokenize import CharTokenizer

    chars = tmp_path / "chars.json"  # a char vocabulary of the model's 300 rows, without 'é'
    chars.write_text(CharTokenizer("".join(chr(c) for c in range(20, 400) if chr(c) != "\u00e9")[:300]).to_json())
    flags = [{"CHARS": str(chars), "DIR": str(tmp_path)}.get(f, f) for f in flags]
    if "--tokenizer" not in flags:
        flags += ["--tokenizer", "bytes"]
    proc = run_module("learngene_jax", "generate", "--model-dir", str(byte_model[1]), *flags, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("text", ["{not json", "[2]", '{"eos_token_id": "two"}'])
def test_a_bad_generation_config_is_one_line_error_not_a_traceback(tmp_path, text):
    """--eos auto reads generation_config.json: broken JSON, a non-object or non-integer ids are a UserError naming
    the file; a good one gives its ids."""
    from learngene_jax.errors import UserError
    from learngene_jax.generate import eos_ids

    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(UserError, match="generation_config.json"):
        eos_ids(str(tmp_path))
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 7]}')
    assert eos_ids(str(tmp_path)) == [2, 7]
