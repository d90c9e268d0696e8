"""Sliding-window perplexity (eval_lm.py) on random tiny transformers models (Llama, GPT-2), against the loop of
transformers' perplexity guide (windows of max_length every stride, overlapping targets −100; weighting="guide": each
window's loss weighted by targets − 1, as its code does) and against the same windows with each loss weighted by the
labels it averaged (weighting="tokens", the default: every token after the first counted once); `learngene eval-lm`
on a text file and a corpus split, and its one-line errors."""

import json
import math
import os

import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert import hf
from learngene_jax.eval_lm import sliding_window_perplexity, window_spans

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = {
    "llama": dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32, rope_theta=500.0),
    "gpt2": dict(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=32),
}
STREAM = np.random.default_rng(0).integers(0, 300, 150)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{kind: (transformers model, its directory)}."""
    import torch

    from learngene_jax.torch_ref import import_transformers

    transformers = import_transformers()
    out = {}
    for kind, kw in CONFIGS.items():
        torch.manual_seed(0)
        ref = (transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)) if kind == "llama" else
               transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw))).eval()
        path = tmp_path_factory.mktemp(kind)
        ref.save_pretrained(path)
        out[kind] = (ref, path)
    return out


def guide_perplexity(model, ids, max_length, stride, weighting="guide"):
    """The loop of transformers' docs/source/en/perplexity.md, batch 1; weighting="tokens": each window's loss times
    the number of labels it averaged (those left after the model's shift) instead of the guide's count."""
    import torch

    encodings = torch.tensor(np.asarray(ids, np.int64))[None]
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        if weighting == "tokens":
            num_loss_tokens = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens)), n_tokens


def test_window_spans_follow_the_guide():
    assert window_spans(10, 4, 2) == [(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert window_spans(10, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert window_spans(3, 8, 5) == [(0, 3, 3)]


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("max_length, stride, batch_size", [(32, 12, 1), (32, 32, 2), (20, 7, 3), (16, 1, 8)])
def test_perplexity_equals_transformers_over_the_guide_windows(pairs, kind, max_length, stride, batch_size):
    ref, path = pairs[kind]
    model, variables = hf.from_hf(path)
    stream = STREAM[:60] if stride == 1 else STREAM
    for weighting in ("guide", "tokens"):
        want, count = guide_perplexity(ref, stream, max_length, stride, weighting)
        got = sliding_window_perplexity(model, variables, stream, max_length, stride, batch_size, weighting)
        assert got["tokens"] == count
        assert math.isclose(got["perplexity"], want, rel_tol=2e-6), (weighting, got["perplexity"], want)
    # "tokens": every token after the first once; without overlap a window's first token is context only
    assert got["tokens"] == len(stream) - (1 if stride < max_length else len(window_spans(len(stream), max_length,
                                                                                          stride)))


def test_eval_lm_command_on_a_text_file_and_a_corpus_split(pairs, tmp_path):
    ref, path = pairs["gpt2"]
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(12))
    (tmp_path / "t.txt").write_text(text)
    run_module("learngene_jax", "eval-lm", "--model-dir", str(path), "--text", str(tmp_path / "t.txt"), "--tokenizer",
               "bytes", "--max-length", "32", "--stride", "10", "--out", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    want, count = guide_perplexity(ref, list(text.encode()), 32, 10, "tokens")
    assert result["tokens"] == count and math.isclose(result["perplexity"], want, rel_tol=2e-6)
    run_module("learngene_jax", "eval-lm", "--model-dir", str(path), "--corpus", "text_file", "--corpus-path",
               str(tmp_path / "t.txt"), "--tokenizer", "bytes", "--max-length", "32", "--stride", "16", "--out",
               str(tmp_path / "split.json"))
    result = json.loads((tmp_path / "split.json").read_text())
    held_out = text[int(len(text) * 0.9):].encode()  # text_file: the last 10 % of the characters (nanoGPT's split)
    want, count = guide_perplexity(ref, list(held_out), 32, 16, "tokens")
    assert result["tokens"] == count and math.isclose(result["perplexity"], want, rel_tol=2e-6)


@pytest.mark.parametrize("flags, needles", [
    (["--max-length", "40"], ["40 tokens per sequence exceed", "n_positions=32", "lower --max-length"]),
    (["--max-length", "16", "--stride", "20"], ["1 <= --stride <= --max-length"]),
    (["--tokens", "BAD"], ["token ids must lie in 0..299"]),
    (["--max-length", "0"], ["--max-length must be >= 2", "got 0"]),
    (["--stride", "0"], ["--stride must be >= 1", "got 0"]),
    (["--out", "DIR"], ["--out:", "is a directory"]),
    (["--corpus", "text_file", "--corpus-path", "TXT", "--tokenizer", "bytes", "--split", "bogus"],
     ["--split 'bogus'", "train, validation"]),
])
def test_eval_lm_bad_input_is_one_line(pairs, tmp_path, flags, needles):
    (tmp_path / "t.txt").write_text("some text to score, long enough for a few windows of sixteen bytes each\n")
    np.save(tmp_path / "bad.npy", np.array([1, 2, 300]))
    flags = [{"BAD": str(tmp_path / "bad.npy"), "DIR": str(tmp_path), "TXT": str(tmp_path / "t.txt")}.get(f, f)
             for f in flags]
    given = "--tokens" in flags or "--corpus" in flags
    source = [] if given else ["--text", str(tmp_path / "t.txt"), "--tokenizer", "bytes"]
    proc = run_module("learngene_jax", "eval-lm", "--model-dir", str(pairs["gpt2"][1]), *source, *flags, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
