"""Sliding-window perplexity of a decoder LM with the windows of transformers' guide "Perplexity of fixed-length
models" (max_length, stride; the targets a window shares with the one before are context, -100), and the
`learngene eval-lm` command (a text file, a corpus split, or token ids)."""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.errors import UserError, check_out_file, fail
from learngene_jax.models.llama import GPT2, Llama, check_context, check_tokens, context_limit

Array = jax.Array


def window_spans(count: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, targets) of each window over a `count`-token stream, the guide's loop: a window every `stride`
    tokens, `max_length` long (the last one shorter), scoring its last `targets` = end − (previous end) tokens."""
    spans, previous = [], 0
    for begin in range(0, count, stride):
        end = min(begin + max_length, count)
        spans.append((begin, end, end - previous))
        previous = end
        if end == count:
            break
    return spans


@functools.partial(jax.jit, static_argnames=("model",))
def _window_nll(model: Llama | GPT2, variables: dict[str, Any], tokens: Array, targets: Array) -> Array:
    """Per window (batch,): the mean negative log-likelihood of its last `targets` tokens (batch,) that have a token
    before them — transformers' loss with those labels and the others −100 (labels shifted inside the model)."""
    logits = model.apply(variables, tokens)[:, :-1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[:, 1:, None], axis=-1)[..., 0]
    label = jnp.arange(1, tokens.shape[1])[None, :]  # label index in the window (label 0 has no prediction)
    scored = label >= tokens.shape[1] - targets[:, None]
    return jnp.sum(jnp.where(scored, nll, 0.0), axis=1) / jnp.sum(scored, axis=1)


WEIGHTINGS = ("tokens", "guide")


def sliding_window_perplexity(model: Llama | GPT2, variables: dict[str, Any], tokens: Any, max_length: int,
                              stride: int, batch_size: int = 1, weighting: str = "tokens") -> dict[str, float | int]:
    """Perplexity of the 1-D token stream `tokens` over the guide's windows: exp of the summed window losses (each
    the mean NLL of its scored targets, transformers' loss) times their weights, over the summed weights. Weighting
    "tokens": the number of targets the loss averaged (the mean NLL per scored token: with stride < max_length every
    token after the first once; with stride = max_length each window's first token is context only, as in the
    guide); "guide": targets − 1, the guide's code (num_valid_tokens − batch_size), which counts one token too few in
    every window that overlaps the one before (stride 1 weights those windows 0). Equal when stride = max_length.
    Windows of equal length run `batch_size` at a time (the same numbers). ValueError for a stream shorter than 2
    tokens, ids outside the vocabulary, or bad lengths."""
    stream = np.asarray(tokens).reshape(-1)
    check_tokens(stream[None], model.vocab_size)
    if len(stream) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {len(stream)}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must lie in 1..max_length={max_length} (a larger stride skips tokens), got {stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    check_context(model, min(max_length, len(stream)))
    spans = window_spans(len(stream), max_length, stride)
    nll_sum, weights = 0.0, 0
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:
        by_length.setdefault(span[1] - span[0], []).append(span)
    for length, group in by_length.items():
        if length < 2:  # one token: no prediction (the guide's loss is NaN there, weighted by 0)
            continue
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            rows = chunk + [chunk[-1]] * (min(batch_size, len(group)) - len(chunk))  # a fixed batch shape
            windows = np.stack([stream[b:e] for b, e, _ in rows]).astype(np.int32)
            means = np.asarray(_window_nll(model, variables, jnp.asarray(windows),
                                           jnp.asarray([t for _, _, t in rows], jnp.int32)), np.float64)
            for mean, (_, _, targets) in zip(means, chunk, strict=False):
                weight = min(targets, length - 1) if weighting == "tokens" else targets - 1
                nll_sum += float(mean) * weight
                weights += weight
    nll = nll_sum / weights
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": weights, "windows": len(spans),
            "stream_tokens": len(stream), "max_length": max_length, "stride": stride, "weighting": weighting}


def _stream(args: argparse.Namespace, model: Any) -> tuple[np.ndarray, str]:
    """The token stream --text, --corpus or --tokens names, and how to name it."""
    from learngene_jax.predict import text_tokenizer

    if args.tokens:
        try:
            ids = np.load(args.tokens, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            fail(UserError, f"cannot read token ids from {args.tokens}: {e}")
        if not isinstance(ids, np.ndarray) or ids.ndim not in (1, 2) or (ids.ndim == 2 and ids.shape[0] != 1):
            fail(UserError, f"--tokens {args.tokens}: expected one stream of token ids, shape (tokens,) or "
                            f"(1, tokens), got {getattr(ids, 'shape', type(ids).__name__)}")
        return ids.reshape(-1), args.tokens
    if args.text:
        from learngene_jax.data.text import read_text
        from learngene_jax.data.tokenize import CharTokenizer

        tokenizer = text_tokenizer(args, model)
        text = read_text(args.text, "--text")
        ids = tokenizer.ids(text, args.text) if isinstance(tokenizer, CharTokenizer) else \
            tokenizer.encode([text.encode()])
        return np.asarray(ids), args.text
    import ml_collections

    from learngene_jax.data.text import text_source

    spec = ""
    if args.corpus != "token_files":
        text_tokenizer(args, model)  # the model's tokenizer (or --tokenizer), checked against its table
        spec = args.tokenizer or str(Path(args.model_dir).expanduser() / "tokenizer.json")
    data = ml_collections.ConfigDict({"name": args.corpus, "path": args.corpus_path, "tokenizer": spec,
                                      "context": 1, "eval_windows": 0})
    source = text_source(data, args.split, train=False)
    return np.asarray(source.tokens), source.name


# what text_source offers: the train documents and the held-out ones
CORPUS_SPLITS = ("train", "validation")


def main(argv: list[str] | None = None) -> None:
    """`learngene eval-lm`: sliding-window perplexity of a language model (transformers' perplexity guide)."""
    from learngene_jax.predict import add_model_flags, resolve_model

    p = argparse.ArgumentParser(prog="learngene eval-lm", description=main.__doc__)
    add_model_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="a UTF-8 text file, encoded whole with --tokenizer (as the guide encodes its text)")
    src.add_argument("--corpus", help="a text corpus of data/text.py (stdlib, shakespeare, folder_text, text_file, "
                                      "token_files, ...): its --split, tokenized as in training")
    src.add_argument("--tokens", help=".npy of integer token ids, one stream (tokens,)")
    p.add_argument("--corpus-path", default="", help="--corpus: its data.path")
    p.add_argument("--split", default="validation",
                   help="--corpus: train, or validation: the held-out documents (default)")
    p.add_argument("--tokenizer", help="bytes, a tokenizer.json, or a directory holding one (default: the model "
                                       "directory's)")
    p.add_argument("--max-length", type=int, default=None, help="window length (default: the model's positions)")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default: max-length / 2)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (the same result)")
    p.add_argument("--weighting", default="tokens", choices=WEIGHTINGS,
                   help="tokens: the mean NLL per token; guide: the guide code's window weights (targets − 1)")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.out:
        check_out_file(args.out)
    if args.corpus and args.split not in CORPUS_SPLITS:
        fail(UserError, f"--split {args.split!r}: a --corpus has the splits {', '.join(CORPUS_SPLITS)}")
    for flag, value, least in (("--max-length", args.max_length, 2), ("--stride", args.stride, 1)):
        if value is not None and value < least:
            fail(UserError, f"{flag} must be >= {least} (leave it out for the default), got {value}")
    model, variables = resolve_model(args)
    if not hasattr(model, "vocab_size"):
        fail(UserError, f"{type(model).__name__} is an image model; eval-lm is for language models")
    # the guide's default: the model's positions (a sliding window narrower than them: the window)
    max_length = min(model.max_positions, context_limit(model)[0]) if args.max_length is None else args.max_length
    stride = max(1, max_length // 2) if args.stride is None else args.stride
    if max_length < 2 or not 1 <= stride <= max_length or args.batch_size < 1:
        fail(UserError, f"need --max-length >= 2, 1 <= --stride <= --max-length (a larger stride skips tokens) and "
                        f"--batch-size >= 1; got {max_length}, {stride}, {args.batch_size}")
    stream, name = _stream(args, model)
    try:
        result = sliding_window_perplexity(model, variables, stream, max_length, stride, args.batch_size,
                                           args.weighting)
    except ValueError as e:
        fail(UserError, f"{name}: {e}{'; lower --max-length' if 'exceed' in str(e) else ''}")
    result = {"source": name, **result}
    print(f"perplexity {result['perplexity']:.6g} (mean NLL {result['nll']:.6g} nats/token over {result['tokens']:,} "
          f"tokens, {result['windows']} windows of {max_length} every {stride}) on {name}")
    if args.out:
        Path(args.out).expanduser().write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    from learngene_jax.errors import run

    run(main)
