"""make_folder: an ImageNet-like JPEG folder from scikit-learn's two photos, the same bytes for the same arguments."""

import json

import pytest
from conftest import run_module
from PIL import Image

from learngene_jax import data
from learngene_jax.config_lib import base_config
from learngene_jax.data import make_folder
from learngene_jax.errors import UserError

SMALL = ["--count", "12", "--classes", "3", "--validation", "3", "--size", "64x48"]


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_arguments_same_bytes_whatever_the_jobs(tmp_path):
    make_folder.main(["--out", str(tmp_path / "a"), *SMALL])
    make_folder.main(["--out", str(tmp_path / "b"), *SMALL, "--jobs", "2"])
    make_folder.main(["--out", str(tmp_path / "c"), *SMALL, "--seed", "1"])
    a, b, c = (files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    assert sorted({k.rsplit("/", 1)[0] for k in a}) == [f"{split}/class_00{i}" for split in ("train", "validation")
                                                        for i in range(3)]
    for path in (tmp_path / "a").rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size in ((64, 48), (48, 64))
    config = base_config()
    config.data.update(dict(name="folder", path=str(tmp_path / "a")))
    train = data.make_source(config.data, "train")
    assert (len(train), train.num_classes) == (12, 3)
    assert list(train.labels()) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(data.make_source(config.data, "validation")) == 3


def test_an_existing_folder_is_reused_only_with_the_same_settings(tmp_path, capsys):
    out = tmp_path / "f"
    make_folder.main(["--out", str(out), *SMALL])
    manifest = json.loads((out / make_folder.MANIFEST).read_text())
    assert (manifest["count"], manifest["classes"], manifest["seed"]) == (12, 3, 0)
    before = files(out)
    make_folder.main(["--out", str(out), *SMALL])
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"reusing {out}")
    assert files(out) == before
    with pytest.raises(UserError, match="other settings: seed=0 \\(asked 2\\)"):
        make_folder.main(["--out", str(out), *SMALL, "--seed", "2"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by make_folder"):
        make_folder.main(["--out", str(foreign), *SMALL])
    with pytest.raises(UserError, match="not a folder"):
        make_folder.main(["--out", str(foreign / "notes.txt"), *SMALL])
    empty = tmp_path / "empty"
    empty.mkdir()
    make_folder.main(["--out", str(empty), *SMALL])  # an empty folder is filled
    assert files(empty) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f", "foreign"]  # no partial folders left


@pytest.mark.parametrize("args,message", [
    (["--count", "0"], "--count 0 must be at least --classes 10"),
    (["--count", "5", "--classes", "10"], "--count 5 must be at least --classes 10"),
    (["--count", "12", "--classes", "0"], "--classes must be >= 1"),
    (["--count", "12", "--classes", "3", "--validation", "2"], "--validation 2 must be 0 or at least --classes 3"),
    (["--count", "12", "--seed", "-1"], "--seed must be >= 0"),
    (["--count", "12", "--size", "big"], "--size must be WIDTHxHEIGHT"),
    (["--count", "12", "--size", "10x8"], "too small"),
    (["--count", "12", "--jobs", "0"], "--jobs must be >= 1"),
])
def test_bad_arguments(tmp_path, args, message):
    with pytest.raises(UserError, match=message.replace("(", "\\(")):
        make_folder.main(["--out", str(tmp_path / "f"), *args])
    assert not (tmp_path / "f").exists()


def test_command_line_error_is_one_line(tmp_path):
    proc = run_module("learngene_jax.data.make_folder", "--out", str(tmp_path / "f"), "--count", "0", check=False)
    assert proc.returncode == 2
    assert proc.stderr == "error: --count 0 must be at least --classes 10 (one image per class)\n"
