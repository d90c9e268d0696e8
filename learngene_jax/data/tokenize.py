"""Tokenizers for the text corpora (`data.tokenizer`) and the `learngene tokenize` command.

`data.tokenizer`:
- `""` or `bytes`: byte tokens, vocabulary 256 (no set-up; loss per token = loss per byte);
- `char`: characters as tokens, the vocabulary being the sorted set of every character of the corpus, train and
  held-out text together (nanoGPT's data/shakespeare_char/prepare.py builds it from the whole file), ids in that
  order; training saves it with the model (WORKDIR/model/tokenizer.json) and a saved one is passed as its path;
- `bpe:N`: a byte-level BPE of N tokens (GPT-2's `<|endoftext|>` among them, id 0) trained with Hugging Face
  `tokenizers` on the corpus's train documents (seconds on the demo corpora), cached as
  `~/.cache/learngene_jax/tokenizers/<corpus digest>-eot-bpe<N>.json` so every stage and process uses the same file (on
  several hosts, train it once with `learngene tokenize` and pass the file);
- a `tokenizer.json` path, or a Hugging Face model directory holding one (a teacher's tokenizer, e.g. Llama's 32,000
  tokens), read with `tokenizers.Tokenizer.from_file`. Documents are encoded whole: the file's truncation and padding
  are switched off (said in a `note:`); its post-processor template (Llama's `<s> $A`) is applied per document, as
  transformers' `tokenizer(text)` does for causal-LM training (said); special-token text inside a document stays
  text (said); a `tokenizer_config.json` beside it whose add_bos_token / add_eos_token contradict the template is
  refused.

Documents of a corpus are packed into one stream as LM trainers pack them (`encode_documents`, which also returns
where each document starts): with a Hugging Face tokenizer each document is [BOS where the tokenizer adds one] + its
tokens + the tokenizer's EOS (nanoGPT's openwebtext/prepare.py appends GPT-2's end-of-text to every document); the EOS
is tokenizer_config.json's eos_token, else config.json's eos_token_id, else the first special token among
<|endoftext|>, <|end_of_text|>, </s>, <eos>. Byte and char vocabularies have no EOS: their documents are separated by a
blank line, as is a tokenizer without any (said in a note).

`learngene tokenize --corpus NAME [--path P] [--documents PATTERN ...] --tokenizer SPEC --out DIR` writes DIR/train.npy
and DIR/validation.npy (uint8, uint16 or int32 token streams, documents packed as above), DIR/train_documents.npy and
DIR/validation_documents.npy (int64: where each document starts, for document masks and data.fraction),
DIR/tokenizer.json (for non-byte tokenizers) and DIR/meta.json (vocabulary size, corpus digest and sizes, bytes per
token); `data.name=token_files --config.data.path=DIR` then trains from memory-mapped files of any size — the path
for a corpus too big to tokenize at every start).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax import logs
from learngene_jax.errors import ConfigError, DataError, fail

BYTE_VOCAB = 256
SEPARATOR = b"\n\n"  # between documents when they are packed into one stream and the vocabulary has no EOS
EOT = "<|endoftext|>"  # GPT-2's end of text: trained BPEs end every document with it
KNOWN_EOS = (EOT, "<|end_of_text|>", "</s>", "<eos>")  # GPT-2 / Qwen2, Llama 3, Llama 2 / Mistral, Gemma


def joined_starts(lengths: list[int], separator: int) -> np.ndarray:
    """Where each of documents of `lengths` tokens starts in a stream that joins them with `separator` tokens."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths[:-1], np.int64) + separator)]).astype(np.int64) \
        if lengths else np.zeros(0, np.int64)


class ByteTokenizer:
    """Bytes as tokens (vocabulary 256)."""

    vocab_size = BYTE_VOCAB
    name = "bytes"
    packing = "text, a blank line between documents"  # no EOS in 256 bytes

    def encode(self, documents: Iterable[bytes]) -> np.ndarray:
        """The documents, in the given order, as one uint8 stream separated by a blank line."""
        return np.frombuffer(SEPARATOR.join(documents), np.uint8)

    def encode_documents(self, documents: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(`encode`'s stream, where each document starts in it): the blank line ends the document before it."""
        docs = list(documents)
        return self.encode(docs), joined_starts([len(d) for d in docs], len(SEPARATOR))

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids → text (bytes that are not UTF-8 become U+FFFD)."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_json(self) -> str | None:
        return None


class CharTokenizer:
    """Characters (Unicode code points) as tokens: id i is the i-th character of `chars`, the sorted set of the
    characters of the text it was built from (nanoGPT's prepare.py: `chars = sorted(list(set(data)))`, `stoi`).
    A character outside the vocabulary is a DataError naming it, never a silent drop."""

    name = "char"
    packing = "text, a blank line between documents"  # nanoGPT's char vocabulary has no EOS

    def __init__(self, chars: str, source: str = "char"):
        self.chars, self.source = chars, source  # source: where the vocabulary came from, for messages
        self.vocab_size = len(chars)
        self._codes = np.frombuffer(chars.encode("utf-32-le"), np.uint32)  # sorted code points

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """The vocabulary of every character of `texts`."""
        codes = [np.unique(np.frombuffer(t.encode("utf-32-le"), np.uint32)) for t in texts]
        vocab = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.uint32)
        return cls(vocab.astype("<u4").tobytes().decode("utf-32-le"))

    @classmethod
    def from_json(cls, text: str, where: str) -> CharTokenizer:
        """A saved char tokenizer (`to_json`); DataError unless its vocabulary is a sorted set of characters."""
        vocab = json.loads(text)["model"].get("vocab")
        if (not isinstance(vocab, list) or not vocab or not all(isinstance(c, str) and len(c) == 1 for c in vocab)
                or any(a >= b for a, b in zip(vocab, vocab[1:], strict=False))):
            fail(DataError, f"{where}: the char vocabulary is not a sorted list of distinct single characters (edited, "
                            f"or not written by training?); pass the tokenizer.json the model was trained with")
        return cls("".join(vocab), where)

    def ids(self, text: str, what: str) -> np.ndarray:
        """`text` as ids (uint8, or uint16 past 256 characters); DataError naming characters outside the vocabulary."""
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        ids = np.searchsorted(self._codes, codes)
        known = (ids < len(self._codes)) & (self._codes[np.minimum(ids, max(len(self._codes) - 1, 0))] == codes) \
            if len(self._codes) else np.zeros(len(codes), bool)
        if not known.all():
            bad = np.flatnonzero(~known)
            chars = sorted({text[i] for i in bad})
            fail(DataError, f"{what} holds {len(bad):,} character(s) outside the {self.vocab_size} characters of the "
                            f"char vocabulary ({self.source}): {', '.join(map(repr, chars[:10]))}"
                            f"{' ...' if len(chars) > 10 else ''} (first at character {bad[0]:,}); the model knows "
                            f"only the characters of the text it was trained on")
        return ids.astype(np.uint8 if self.vocab_size <= 1 << 8 else np.uint16 if self.vocab_size <= 1 << 16
                          else np.int32)

    def encode(self, documents: Iterable[bytes]) -> np.ndarray:
        """The documents (UTF-8; invalid bytes become U+FFFD), in the given order, as one stream of character ids
        separated by a blank line."""
        return self.ids(SEPARATOR.join(documents).decode("utf-8", errors="replace"), "the text")

    def encode_documents(self, documents: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(`encode`'s stream, where each document starts in it): the blank line ends the document before it."""
        texts = [d.decode("utf-8", errors="replace") for d in documents]
        separator = SEPARATOR.decode()
        return self.ids(separator.join(texts), "the text"), joined_starts([len(t) for t in texts], len(separator))

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids → text."""
        return self._codes[np.asarray(list(ids), np.int64)].astype("<u4").tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        """{"model": {"type": "char", "vocab": [...]}}: `same_tokenizer` compares `model` as a tokenizer.json's."""
        return json.dumps({"model": {"type": "char", "vocab": list(self.chars)}}, ensure_ascii=False) + "\n"


def is_char_json(text: str) -> bool:
    """Whether a tokenizer file's text is a saved char tokenizer (not a Hugging Face tokenizer.json)."""
    try:
        spec = json.loads(text)
    except ValueError:
        return False
    return isinstance(spec, dict) and isinstance(spec.get("model"), dict) and spec["model"].get("type") == "char"


def save_tokenizer(directory: str | Path, tokenizer: Any) -> None:
    """Write `tokenizer` (a char or Hugging Face tokenizer) as DIRECTORY/tokenizer.json, beside a model's weights, so
    predict, generation and export decode what it emits; byte tokens need no file."""
    text = tokenizer.to_json() if tokenizer is not None else None
    if text is not None:
        (Path(directory) / "tokenizer.json").write_text(text)


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` that encodes whole documents: its file's truncation and padding are
    switched off; a post-processor template's special tokens (BOS/EOS) are added around each document, as
    transformers' `tokenizer(text)` adds them for causal-LM training (run_clm.py), and then join the documents in
    place of the blank line; special-token text inside a document (a literal "<s>") stays text. `eos` (a token of
    the vocabulary) ends every document of a packed corpus (`encode_documents`) unless the template ends them."""

    def __init__(self, tokenizer: Any, name: str, eos: str | None = None):
        self.tokenizer, self.name = tokenizer, name
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.notes: list[str] = []
        asked = []
        if tokenizer.truncation:
            asked.append(f"truncation to {tokenizer.truncation['max_length']} tokens")
        if tokenizer.padding:
            length = tokenizer.padding.get("length")
            asked.append(f"padding{f' to {length} tokens' if length else ''} with {tokenizer.padding['pad_token']}")
        if asked:
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self.notes.append(f"{name} asks for {' and '.join(asked)}: not applied, documents are encoded whole")
        tokenizer.encode_special_tokens = True
        plain = tokenizer.encode("a", add_special_tokens=False).ids
        full = tokenizer.encode("a", add_special_tokens=True).ids
        at = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
        self.template = (full[:at], full[at + len(plain):])  # the ids the post-processor puts before / after
        if any(self.template):
            words = [f"{' '.join(map(tokenizer.id_to_token, ids))} {where}"
                     for ids, where in zip(self.template, ("before", "after"), strict=True) if ids]
            self.notes.append(f"{name}'s post-processor adds {' and '.join(words)} each document (per document, as "
                              f"transformers' tokenizer(text) does for causal-LM training); these tokens join the "
                              f"documents instead of a blank line")
            self._separator = np.zeros(0, np.int64)
        else:
            self._separator = np.asarray(tokenizer.encode(SEPARATOR.decode(), add_special_tokens=False).ids, np.int64)
        self._special = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special})
        eos_id = None if eos is None or self.template[1] else tokenizer.token_to_id(eos)
        self._end = np.asarray([] if eos_id is None else [eos_id], np.int64)  # appended to each packed document
        bos = " ".join(map(tokenizer.id_to_token, self.template[0]))
        end = " ".join(map(tokenizer.id_to_token, self.template[1])) or (eos if eos_id is not None else "")
        self.packing = (f"{bos + ' ' if bos else ''}text{' ' + end if end else ''}" if bos or end
                        else "text, a blank line between documents")  # how documents are packed (meta.json)

    def _encode_each(self, documents: Iterable[bytes]) -> list[np.ndarray]:
        """Each document (UTF-8; invalid bytes become U+FFFD) with the template's tokens."""
        texts = [d.decode("utf-8", errors="replace") for d in documents]
        for note in self.notes:
            _note_once(note)
        literal = [t for t in self._special if any(t in text for text in texts)]
        if literal:
            _note_once(f"documents hold the text of special tokens of {self.name} ({', '.join(literal[:5])}): "
                       f"encoded as that text, not as the special ids")
        return [np.asarray(enc.ids, np.int64) for enc in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def _stream(self, parts: list[np.ndarray], separator: np.ndarray) -> np.ndarray:
        joined = [a for i, part in enumerate(parts) for a in ((separator, part) if i else (part,))]
        stream = np.concatenate(joined) if joined else np.zeros(0, np.int64)
        return stream.astype(np.uint16 if self.vocab_size <= 1 << 16 else np.int32)

    def encode(self, documents: Iterable[bytes]) -> np.ndarray:
        """The documents as transformers' `tokenizer(text)` encodes each (a prompt: no EOS is added), as one token
        stream: blank-line tokens between documents where the template adds no tokens."""
        return self._stream(self._encode_each(documents), self._separator)

    def encode_documents(self, documents: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """A corpus packed as LM trainers pack it, and where each document starts: [BOS] + text + EOS per document
        (`self.packing`); a blank line between documents when the tokenizer has neither BOS nor EOS (said)."""
        parts = [np.concatenate([ids, self._end]) for ids in self._encode_each(documents)]
        separator = self._separator if not len(self._end) else np.zeros(0, np.int64)
        if len(separator):
            _note_once(f"{self.name} has no EOS token (no eos_token in a tokenizer_config.json beside it, none of "
                       f"{', '.join(KNOWN_EOS)}) and adds no BOS: documents are separated by a blank line")
        return self._stream(parts, separator), joined_starts([len(q) for q in parts], len(separator))

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids → text (special tokens kept)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        return self.tokenizer.to_str()


_SAID: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        logs.note(message)


def same_tokenizer(a: str | None, b: str | None) -> bool:
    """Whether two tokenizers (tokenizer.json texts; None: byte tokens) map text to the same ids: the same file, or
    the same model (vocabulary, merges) and added tokens — truncation, padding and templates aside."""
    if a is None or b is None or a == b:
        return a == b

    def ids(text: str) -> tuple[Any, Any]:
        spec = json.loads(text)
        return spec.get("model"), sorted((t["id"], t["content"]) for t in spec.get("added_tokens") or ())
    return ids(a) == ids(b)


def check_table(table: int, tokenizer: int, what: str) -> None:
    """An embedding table may be larger than the tokenizer (padded to a multiple of 64 or 128: MPT, nanoGPT,
    DeepSeek-Coder; ids the tokenizer never emits are unused rows); a smaller one is a ConfigError naming both."""
    if tokenizer > table:
        fail(ConfigError, f"{what} has an embedding table of {table:,} tokens but the data's tokenizer has "
                          f"{tokenizer:,}: ids {table}..{tokenizer - 1} have no row; tokenize the corpus with the "
                          f"model's own tokenizer")


def model_tokenizer(model_dir: str | Path) -> str | None:
    """The tokenizer.json text a Hugging Face model directory ships, None where it has none."""
    path = Path(model_dir).expanduser() / "tokenizer.json"
    return path.read_text() if path.is_file() else None


def _check_tokenizer_config(hf: HFTokenizer, path: Path) -> None:
    """A tokenizer_config.json beside `path` whose add_bos_token / add_eos_token disagree with tokenizer.json's
    post-processor is refused: which one transformers follows depends on the tokenizer class."""
    config_path = path.parent / "tokenizer_config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        fail(DataError, f"cannot read {config_path} as JSON ({e})")
    for key, which, ids in (("add_bos_token", "bos_token", hf.template[0]), ("add_eos_token", "eos_token",
                                                                              hf.template[1])):
        token = config.get(which)
        token = token.get("content") if isinstance(token, dict) else token
        if key not in config or token is None or hf.tokenizer.token_to_id(token) is None:
            continue
        adds = hf.tokenizer.token_to_id(token) in ids
        if bool(config[key]) != adds:
            fail(DataError, f"{config_path} sets {key}={config[key]} but the post-processor of {path} "
                            f"{'adds' if adds else 'does not add'} {token}; make the two agree (tokenizer.json's "
                            f"post_processor, or drop {key}) so the corpus is tokenized as transformers would")


def eos_token(tokenizer: Any, path: Path | None = None) -> str | None:
    """The end-of-text token of a `tokenizers.Tokenizer` (read from `path`): tokenizer_config.json's eos_token beside
    it, else config.json's eos_token_id (the first of a list), else the first of KNOWN_EOS among its special tokens;
    None when there is none."""
    def read(name: str) -> dict[str, Any]:
        file = path.parent / name if path is not None else None
        if file is None or not file.is_file():
            return {}
        try:
            spec = json.loads(file.read_text())
        except ValueError as e:
            fail(DataError, f"cannot read {file} as JSON ({e})")
        return spec if isinstance(spec, dict) else {}

    token = read("tokenizer_config.json").get("eos_token")
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
        return token
    eos_id = read("config.json").get("eos_token_id")
    eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
    if isinstance(eos_id, int) and (token := tokenizer.id_to_token(eos_id)) is not None:
        return token
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    return next((t for t in KNOWN_EOS if t in special), None)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        fail(ConfigError, "data.tokenizer needs Hugging Face `tokenizers` (pip install tokenizers), or use "
                          "data.tokenizer='' (byte tokens)")
    return tokenizers


def train_bpe(documents: Iterable[bytes], vocab_size: int) -> HFTokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenization, all 256 bytes in the alphabet) of `vocab_size` tokens, GPT-2's
    <|endoftext|> (id 0) among them: it ends each document of a packed corpus."""
    tk = _tokenizers()
    if vocab_size < BYTE_VOCAB + 1:
        fail(ConfigError, f"a byte-level BPE needs more than {BYTE_VOCAB} tokens, got bpe:{vocab_size}")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[EOT],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator((d.decode("utf-8", errors="replace") for d in documents), trainer=trainer)
    return HFTokenizer(tokenizer, f"bpe:{vocab_size}", EOT)


def cache_dir() -> Path:
    return Path(os.environ.get("LEARNGENE_CACHE", Path.home() / ".cache" / "learngene_jax")) / "tokenizers"


def get_tokenizer(spec: str, train_documents: dict[str, bytes] | None = None, corpus_digest: str = "",
                  held_out: dict[str, bytes] | None = None) -> ByteTokenizer | CharTokenizer | HFTokenizer:
    """The tokenizer `spec` names (see the module docstring); `bpe:N` trains on `train_documents` (name order) once
    per corpus digest and caches the result; `char` takes its vocabulary from the train and `held_out` documents."""
    spec = (spec or "bytes").strip()
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "char":
        if train_documents is None:
            fail(ConfigError, "data.tokenizer='char' builds its vocabulary from a document corpus; token files carry "
                              "their own")
        return CharTokenizer.from_texts(SEPARATOR.join(docs[n] for n in sorted(docs)).decode("utf-8", "replace")
                                        for docs in (train_documents, held_out or {}))
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec[4:])
        except ValueError:
            fail(ConfigError, f"data.tokenizer={spec!r}: expected bpe:N with an integer N, e.g. bpe:1024")
        path = cache_dir() / f"{corpus_digest[:16]}-eot-bpe{vocab}.json"  # -eot-: BPEs with <|endoftext|>
        if corpus_digest and path.is_file():
            return HFTokenizer(_tokenizers().Tokenizer.from_file(str(path)), spec, EOT)
        if train_documents is None:
            fail(ConfigError, f"data.tokenizer={spec!r} trains on a document corpus; token files carry their own")
        tok = train_bpe((train_documents[n] for n in sorted(train_documents)), vocab)
        if tok.vocab_size < vocab:
            fail(ConfigError, f"data.tokenizer={spec!r}: this corpus supports only {tok.vocab_size} BPE tokens (every "
                              f"pair is merged); ask for bpe:{tok.vocab_size} or fewer")
        if corpus_digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(tok.to_json())
            tmp.replace(path)  # atomic: concurrent stages read a whole file or train their own
        return tok
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        fail(ConfigError, f"data.tokenizer={spec!r}: no such tokenizer.json (give '', bytes, char, bpe:N, a "
                          f"tokenizer.json or a model directory holding one)")
    if is_char_json(text := path.read_text(errors="replace")):
        return CharTokenizer.from_json(text, str(path))
    try:
        tokenizer = _tokenizers().Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        fail(DataError, f"cannot read {path} as a Hugging Face tokenizer ({str(e).splitlines()[0][:200]})")
    hf = HFTokenizer(tokenizer, str(path), eos_token(tokenizer, path))
    _check_tokenizer_config(hf, path)
    return hf

