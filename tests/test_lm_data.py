"""Language-model data as LM trainers prepare it (issue 27, item 6): documents packed with the tokenizer's BOS/EOS,
epochs that visit every window once, document masks that keep packed documents apart (the packed logits equal each
document's alone), data.fraction as a seeded random subset of documents, and Hugging Face `datasets` read offline
from a save_to_disk directory, a folder of data files or the local cache, with one-line errors."""

import json
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from conftest import run_module

from learngene_jax import tokenize_corpus
from learngene_jax.data import text, tokenize
from learngene_jax.errors import ConfigError, DataError
from learngene_jax.models.llama import GPT2, Llama, segment_mask
from learngene_jax.objectives.language import document_inputs

WORDS = "the cat sat on a mat and the dog barked at night while birds sang in the morning".split()


def _docs(n: int, seed: int = 0) -> dict[str, str]:
    """`n` documents of seeded random words and lengths, named doc000.txt, ..."""
    rng = np.random.default_rng(seed)
    return {f"doc{i:03d}.txt": " ".join(rng.choice(WORDS, rng.integers(5, 40))) + "." for i in range(n)}


def _folder(tmp_path, n: int = 20):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, body in _docs(n).items():
        (folder / name).write_text(body)
    return folder


def _data(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "folder_text", "path": "", "context": 8, "eval_windows": 4,
                                      "train_split": "train", "eval_split": "validation", "documents": (),
                                      "fraction": 1.0, "tokenizer": "", "sampling": "shuffle", "document_mask": False,
                                      "subset_seed": 0, "data_dir": "", "text_key": "text", "hf_config": "", **kw})


def _bpe_with(tmp_path, special=(), template: str | None = None, config: dict | None = None):
    """A tokenizer.json (byte-level BPE on WORDS plus `special` tokens, a `template` post-processor) in its own
    directory, with a tokenizer_config.json when `config` is given."""
    from tokenizers import processors

    tok = tokenize.train_bpe([" ".join(WORDS).encode()] * 4, 300).tokenizer
    tok.add_special_tokens(list(special))
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, tok.token_to_id(t)) for t in special if t in template])
    folder = tmp_path / "tok"
    folder.mkdir(exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# -- documents packed with BOS / EOS -------------------------------------------------------------------------------
def test_llama_style_tokenizers_pack_bos_text_eos_per_document(tmp_path):
    folder = _bpe_with(tmp_path, ("<s>", "</s>"), "<s> $A", {"eos_token": "</s>", "bos_token": "<s>",
                                                              "add_bos_token": True, "add_eos_token": False})
    tok = tokenize.get_tokenizer(str(folder))
    bos, eos = tok.tokenizer.token_to_id("<s>"), tok.tokenizer.token_to_id("</s>")
    a, b = (tok.tokenizer.encode(t, add_special_tokens=False).ids for t in ("the cat", "a dog"))
    stream, starts = tok.encode_documents([b"the cat", b"a dog"])
    assert stream.tolist() == [bos, *a, eos, bos, *b, eos] and starts.tolist() == [0, len(a) + 2]
    assert tok.packing == "<s> text </s>"
    assert tok.encode([b"the cat"]).tolist() == [bos, *a]  # a prompt, as tokenizer(text): no EOS


def test_gpt2_style_tokenizers_end_each_document_with_endoftext(tmp_path):
    tok = tokenize.get_tokenizer(str(_bpe_with(tmp_path)))  # trained BPEs hold <|endoftext|> (id 0), no template
    eot = tok.tokenizer.token_to_id(tokenize.EOT)
    a, b = (tok.tokenizer.encode(t, add_special_tokens=False).ids for t in ("the cat", "a dog"))
    stream, starts = tok.encode_documents([b"the cat", b"a dog"])
    assert eot == 0 and stream.tolist() == [*a, eot, *b, eot] and starts.tolist() == [0, len(a) + 1]


def test_config_json_names_the_eos_and_a_tokenizer_without_one_separates_by_a_blank_line(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = _bpe_with(tmp_path, ("<|im_end|>",))
    (folder / "config.json").write_text(json.dumps({"eos_token_id": [tokenize.get_tokenizer(str(folder)).tokenizer
                                                                     .token_to_id("<|im_end|>"), 0]}))
    assert tokenize.get_tokenizer(str(folder)).packing == "text <|im_end|>"
    plain = Tokenizer(models.BPE())  # no special token at all
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.train_from_iterator([" ".join(WORDS)], trainers.BpeTrainer(
        vocab_size=280, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    path = tmp_path / "plain.json"
    plain.save(str(path))
    tok = tokenize.get_tokenizer(str(path))
    a, b, blank = (plain.encode(t).ids for t in ("the cat", "a dog", "\n\n"))
    stream, starts = tok.encode_documents([b"the cat", b"a dog"])
    assert stream.tolist() == [*a, *blank, *b] and starts.tolist() == [0, len(a) + len(blank)]
    assert "no EOS token" in capsys.readouterr().err


def test_bytes_and_characters_keep_the_blank_line_and_know_where_documents_start():
    stream, starts = tokenize.ByteTokenizer().encode_documents([b"ab", b"cde", b"f"])
    assert bytes(stream) == b"ab\n\ncde\n\nf" and starts.tolist() == [0, 4, 9]
    char = tokenize.CharTokenizer.from_texts(["abcdéf\n"])
    stream, starts = char.encode_documents([b"ab", "cdé".encode(), b"f"])
    assert char.decode(stream) == "ab\n\ncdé\n\nf" and starts.tolist() == [0, 4, 9]


def test_learngene_tokenize_writes_document_starts_and_the_packing(tmp_path):
    folder = _folder(tmp_path)
    tokenize_corpus.main(["--corpus", "folder_text", "--path", str(folder), "--tokenizer", str(_bpe_with(tmp_path)),
                          "--out", str(tmp_path / "tokens")])
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    train, starts = (np.load(tmp_path / "tokens" / f) for f in ("train.npy", "train_documents.npy"))
    assert meta["packing"] == "text <|endoftext|>" and len(starts) == meta["train"]["documents"] == 18
    assert (train[starts[1:] - 1] == 0).all() and train[-1] == 0  # every document ends with <|endoftext|>


# -- epochs without replacement ------------------------------------------------------------------------------------
def test_an_epoch_visits_every_window_once_and_the_next_epoch_reshuffles():
    length, windows, batch = 8, 24, 6
    source = text.TextSource("t", np.arange(windows * length + 1, dtype=np.int32), length, 0)
    loader = text.TextLoader(source, batch, seed=3, train=True)
    assert loader.steps_per_epoch == windows // batch == 4
    epochs = [[b["tokens"] for b in loader.epoch(e)] for e in (0, 1)]
    for tokens in epochs:
        tokens = np.concatenate(tokens)
        np.testing.assert_array_equal(np.sort(tokens[:, :-1].ravel()), np.arange(windows * length))  # inputs
        np.testing.assert_array_equal(np.sort(tokens[:, 1:].ravel()), np.arange(1, windows * length + 1))  # targets
    assert not np.array_equal(epochs[0][0], epochs[1][0])  # another order
    again = text.TextLoader(source, batch, seed=3, train=True)
    np.testing.assert_array_equal(next(iter(again.steps(6, start=5)))["tokens"], epochs[1][1])  # resumable
    halves = [text.TextLoader(source, batch, seed=3, train=True, process_index=i, process_count=2) for i in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([next(iter(h.epoch(0)))["tokens"] for h in halves]), epochs[0][0])
    for each in (loader, again, *halves):
        each.close()


def test_random_sampling_draws_nanogpts_windows_with_replacement():
    stream = np.arange(100, dtype=np.int32)
    source = text.TextSource("t", stream, 8, 0, sampling="random")
    maker = text.TextLoader(source, 4, seed=5, train=True).make_batch
    starts = np.random.default_rng([5, 7]).integers(0, len(stream) - 9 + 1, 4)
    np.testing.assert_array_equal(maker(7)["tokens"][:, 0], starts)


def test_recipes_sample_as_their_reference():
    from learngene_jax.config_lib import load_config

    assert load_config("configs/nanogpt_shakespeare_char.py").data.sampling == "random"  # nanoGPT's get_batch
    assert load_config("configs/lm_demo.py").data.sampling == "shuffle"


# -- document masks ------------------------------------------------------------------------------------------------
def test_document_positions_restart_at_each_document_and_mask_the_first_target():
    doc_starts = np.array([0, 3, 10])
    got = text.document_positions(doc_starts, np.array([1, 8]), 5)
    assert got["segments"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    assert got["positions"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]  # a document cut by the window starts at 0
    assert got["same"].tolist() == [[1, 0, 1, 1], [1, 0, 1, 1]]  # 3 and 10 open documents: not targets


@pytest.mark.parametrize("model", [
    Llama(vocab_size=64, width=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=48, max_positions=32),
    GPT2(vocab_size=64, width=32, depth=2, num_heads=4, max_positions=32),
], ids=["llama_gqa", "gpt2"])
def test_packed_documents_have_the_logits_each_has_alone(model):
    """Three documents packed in one row of a batch (a window of the data pipeline with data.document_mask) give
    the logits each document gives alone, within float32 rounding (GPT-2's learned positions included)."""
    rng = np.random.default_rng(0)
    lengths = (5, 9, 7)
    stream = rng.integers(0, 64, sum(lengths) + 1).astype(np.int32)
    doc_starts = np.concatenate([[0], np.cumsum(lengths[:-1])])
    source = text.TextSource("t", stream, sum(lengths), 0, 64, starts=doc_starts, document_mask=True)
    batch = text.TextLoader(source, 1, seed=0, train=True).make_batch(0)
    assert batch["token_mask"][0].tolist() == [float(i + 1 not in doc_starts) for i in range(sum(lengths))]
    variables = model.init(jax.random.key(1), stream[None, :8])
    packed = model.apply(variables, batch["tokens"][:, :-1], **document_inputs(batch))
    for start, n in zip(doc_starts, lengths, strict=True):
        alone = model.apply(variables, stream[None, start:start + n])
        np.testing.assert_allclose(packed[:, start:start + n], alone, rtol=0, atol=2e-5)
    unmasked = model.apply(variables, batch["tokens"][:, :-1])
    assert np.abs(unmasked[:, lengths[0]:] - packed[:, lengths[0]:]).max() > 1e-3  # without: documents mix


def test_segment_mask_in_the_explicit_softmax_path_equals_the_fused_one():
    from learngene_jax.models.llama import causal_attention

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 6, 2, 4)).astype(np.float32) for _ in range(3))
    mask = segment_mask(np.array([[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]]))
    fused = causal_attention(q, k, v, mask, None)
    explicit = causal_attention(q, k, v, mask, None, drop_rate=1e-9, rng=jax.random.key(0))
    np.testing.assert_allclose(fused, explicit, rtol=0, atol=1e-5)


# -- data.fraction: a seeded random subset of documents ------------------------------------------------------------
def test_fraction_is_a_seeded_random_subset_of_documents(tmp_path):
    folder = _folder(tmp_path, 40)

    def documents(fraction=1.0, seed=0):
        s = text.text_source(_data(path=str(folder), fraction=fraction, subset_seed=seed), "train", train=True)
        return [bytes(s.tokens[a:b]).rstrip(b"\n") for a, b in zip(s.starts, [*s.starts[1:], len(s.tokens)],
                                                                    strict=True)]
    docs = documents()  # name order
    half, quarter = set(documents(0.5)), set(documents(0.25))
    assert len(docs) == len(set(docs)) == 36 and len(half) == 18 and len(quarter) == 9
    assert quarter < half < set(docs)  # subsets, and a smaller fraction a subset of a larger one
    assert set(documents(0.5)) == half and set(documents(0.5, seed=1)) != half  # reproducible, seeded
    assert half != set(docs[:18])  # not the first documents in name order
    assert documents(0.5) == [d for d in docs if d in half]  # in stream order
    with pytest.raises(ConfigError, match="keeps all of them"):
        text.text_source(_data(path=str(folder), fraction=0.99), "train", train=True)


def test_token_files_without_document_starts_refuse_masks_and_fractions(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tokens"
    tokenize_corpus.main(["--corpus", "folder_text", "--path", str(_folder(tmp_path)), "--out", str(out)])
    data = _data(name="token_files", path=str(out))
    starts = np.load(out / "train_documents.npy")
    np.testing.assert_array_equal(text.text_source(data, "train", train=True).starts, starts)
    (out / "train_documents.npy").unlink()
    for change in ({"fraction": 0.5}, {"document_mask": True}):
        with pytest.raises(DataError, match="train_documents.npy.*tokenize the corpus again"):
            text.text_source(_data(name="token_files", path=str(out), **change), "train", train=True)


# -- Hugging Face datasets, offline --------------------------------------------------------------------------------
def _saved_dataset(tmp_path, lone: bool = False):
    datasets = pytest.importorskip("datasets")
    rows = list(_docs(12).values())
    train = datasets.Dataset.from_dict({"text": rows[:10] + [""], "id": list(range(11))})
    test = datasets.Dataset.from_dict({"text": rows[10:], "id": [10, 11]})
    path = tmp_path / ("lone" if lone else "saved")
    (train if lone else datasets.DatasetDict({"train": train, "test": test})).save_to_disk(str(path))
    return path, rows


def test_a_save_to_disk_dataset_is_a_corpus_one_document_per_row(tmp_path):
    path, rows = _saved_dataset(tmp_path)
    corpus = text.load_corpus("hf_dataset", str(path), _data(eval_split="test"))
    assert [d.decode() for _, d in sorted(corpus.train.items())] == rows[:10]  # the empty row skipped
    assert [d.decode() for _, d in sorted(corpus.validation.items())] == rows[10:]
    lone, _ = _saved_dataset(tmp_path, lone=True)
    corpus = text.load_corpus("hf_dataset", str(lone), _data(train_split="train[:80%]", eval_split="train[80%:]"))
    # 11 rows: datasets' slices round to the closest row (9 / 2); the empty last row is skipped
    assert len(corpus.train) == 9 and len(corpus.validation) == 1
    tokenize_corpus.main(["--corpus", "hf_dataset", "--path", str(path), "--splits", "train", "test", "--out",
                   str(tmp_path / "tokens")])  # learngene tokenize
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert (meta["train"]["documents"], meta["validation"]["documents"]) == (10, 2)


def test_a_folder_of_data_files_and_the_local_cache_load_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "files"
    folder.mkdir()
    rows = list(_docs(6).values())
    for split, part in (("train", rows[:4]), ("test", rows[4:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in part))
    data = _data(eval_split="test", data_dir=str(tmp_path / "cache"))
    corpus = text.load_corpus("hf_dataset", str(folder), data)
    assert sorted(d.decode() for d in corpus.train.values()) == sorted(rows[:4])
    # a dataset in the cache as load_dataset leaves it (<owner>___<name>/<config>/<version>/<hash>/), read offline
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "built"))
    root = tmp_path / "cache" / "someone___tiny_stories" / "default" / "0.0.0" / "0123abcd"
    root.mkdir(parents=True)
    for split, d in ds.items():
        shutil.copy(d.cache_files[0]["filename"], root / f"tiny_stories-{split}.arrow")
    info = json.loads((Path(ds["train"].cache_files[0]["filename"]).parent / "dataset_info.json").read_text())
    (root / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default",
                                                         "dataset_name": "tiny_stories"}))
    corpus = text.load_corpus("hf_dataset", "someone/tiny_stories", data)
    assert sorted(d.decode() for d in corpus.validation.values()) == sorted(rows[4:])


@pytest.mark.parametrize("path, changes, message", [
    ("{tmp}/nowhere/data", {}, "no such dataset directory"),
    ("someone/not_cached", {}, "neither a dataset directory nor a dataset in the local Hugging Face cache"),
    ("{saved}", {"text_key": "story"}, "no column 'story' .columns: text, id.; set data.text_key"),
    ("{saved}", {"text_key": "id"}, "holds .*int64.*not text"),
    ("{saved}", {"eval_split": "validation"}, "no split 'validation'.*its splits: train, test"),
    ("{lone}", {"eval_split": "test"}, "one Dataset, read as the split 'train'.*train\\[:90%\\]"),
    ("", {}, "needs data.path"),
])
def test_hf_dataset_errors_are_one_line(tmp_path, path, changes, message):
    saved, _ = _saved_dataset(tmp_path)
    lone, _ = _saved_dataset(tmp_path, lone=True)
    path = path.format(tmp=tmp_path, saved=saved, lone=lone)
    with pytest.raises(DataError, match=message) as e:
        text.load_corpus("hf_dataset", path, _data(**{"eval_split": "test", "data_dir": str(tmp_path / "cache"),
                                                      **changes}))
    assert "\n" not in str(e.value)


# -- through the command line --------------------------------------------------------------------------------------
def test_training_on_a_saved_dataset_with_document_masks_through_main(tmp_path):
    path, _ = _saved_dataset(tmp_path)
    tok = _bpe_with(tmp_path)
    proc = run_module("learngene_jax.main", "--config=configs/lm_hf_teacher.py:stage=scratch,smoke=True",
                      f"--workdir={tmp_path / 'run'}", "--config.data.name=hf_dataset", f"--config.data.path={path}",
                      "--config.data.eval_split=test", f"--config.data.tokenizer={tok}", "--config.data.eval_windows=4",
                      "--config.data.document_mask=True", "--config.data.fraction=0.5")
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert np.isfinite(final["loss"]) and np.isfinite(final["eval_loss"]), proc.stderr[-2000:]
    assert "data.fraction=0.5: 5 random train document(s)" in proc.stderr
    bad = run_module("learngene_jax.main", "--config=configs/lm_hf_teacher.py:stage=scratch,smoke=True",
                     f"--workdir={tmp_path / 'bad'}", "--config.data.name=hf_dataset", f"--config.data.path={path}",
                     "--config.data.text_key=story", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in \
        bad.stderr, bad.stderr[-2000:]
