"""`learngene generate`: text prompts continued by a language model through the KV-cached generation of
models/generation.py (greedy or sampled, EOS stops), printed and optionally written as JSON lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from learngene_jax.errors import UserError, check_out_file, fail
from learngene_jax.models.generation import check_sampling, generate


def eos_ids(model_dir: str | None) -> list[int]:
    """The EOS ids a Hugging Face directory names (generation_config.json, else config.json; one id or a list);
    none for other models."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir).expanduser() / name if model_dir else None
        if path is not None and path.is_file():
            try:
                config = json.loads(path.read_text())
                value = config.get("eos_token_id") if isinstance(config, dict) else None
                ids = [] if value is None else [int(v) for v in np.atleast_1d(value)]
            except (ValueError, TypeError) as e:  # bad JSON or UTF-8, or ids that are not integers
                fail(UserError, f"{path} is not a readable Hugging Face {name} ({str(e)[:120]}); fix the file or "
                                f"pass --eos none / explicit ids")
            if not isinstance(config, dict):
                fail(UserError, f"{path} holds a JSON {type(config).__name__}, not the object of a {name}; fix the "
                                f"file or pass --eos none / explicit ids")
            if ids:
                return ids
    return []


def parse_eos(text: str, model_dir: str | None) -> list[int]:
    """--eos: 'auto' (the model directory's), 'none', or comma-separated ids."""
    if text == "auto":
        return eos_ids(model_dir)
    if text == "none":
        return []
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        fail(UserError, f"--eos {text!r}: give auto, none or comma-separated token ids (e.g. 2 or 128001,128009)")


def main(argv: list[str] | None = None) -> None:
    """`learngene generate`: continue text prompts with a language model (KV-cached, greedy or sampled)."""
    from learngene_jax.predict import add_model_flags, resolve_model, text_tokenizer

    p = argparse.ArgumentParser(prog="learngene generate", description=main.__doc__)
    add_model_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeat for a batch of prompts)")
    src.add_argument("--prompts", help="a UTF-8 text file: one prompt per line (blank lines skipped)")
    p.add_argument("--tokenizer", help="bytes, a tokenizer.json, or a directory holding one (default: the model "
                                       "directory's)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sampled")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the nucleus of this mass (1: all)")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed")
    p.add_argument("--eos", default="auto", help="stop ids: auto (a Hugging Face directory's eos_token_id), none, "
                                                 "or comma-separated ids")
    p.add_argument("--out", help="also write one JSON line per prompt here (prompt, completion, ids, stop)")
    args = p.parse_args(argv)
    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        fail(UserError, f"--{str(e).replace('_', '-')}")
    if args.out:
        check_out_file(args.out)
    model, variables = resolve_model(args)
    if not hasattr(model, "vocab_size"):
        fail(UserError, f"{type(model).__name__} is an image model; generate is for language models")
    tokenizer = text_tokenizer(args, model)
    texts = args.prompt if args.prompt else _prompt_lines(args.prompts)
    eos = parse_eos(args.eos, args.model_dir)
    prompts = [_encode(tokenizer, text, f"prompt {i + 1}") for i, text in enumerate(texts)]
    try:
        seq = generate(model, variables, prompts, args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, rng=jax.random.key(args.seed), eos_id=eos or None)
    except ValueError as e:
        fail(UserError, f"{e}; shorten the prompts or lower --max-new-tokens" if "exceed" in str(e) else str(e))
    longest = max(len(ids) for ids in prompts)
    records = []
    for text, row in zip(texts, seq[:, longest:], strict=True):
        stops = [i for i, token in enumerate(row) if token in eos]
        ids = row[:stops[0] + 1] if stops else row
        completion = tokenizer.decode(ids[:-1] if stops else ids)
        records.append({"prompt": text, "completion": completion, "ids": [int(i) for i in ids],
                        "stop": "eos" if stops else "length"})
        print(text + completion)
    if args.out:
        Path(args.out).expanduser().write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _prompt_lines(path: str) -> list[str]:
    from learngene_jax.data.text import read_text

    lines = [line for line in read_text(path, "--prompts").split("\n") if line.strip()]
    if not lines:
        fail(UserError, f"--prompts {path} holds no prompt (one per line)")
    return lines


def _encode(tokenizer: Any, text: str, what: str) -> np.ndarray:
    """A prompt's ids: characters outside a char vocabulary are a one-line error (tokenize.CharTokenizer.ids)."""
    from learngene_jax.data.tokenize import CharTokenizer

    if not text:
        fail(UserError, f"{what} is empty")
    ids = tokenizer.ids(text, what) if isinstance(tokenizer, CharTokenizer) else tokenizer.encode([text.encode()])
    return np.asarray(ids, np.int64)


if __name__ == "__main__":
    from learngene_jax.errors import run

    run(main)
