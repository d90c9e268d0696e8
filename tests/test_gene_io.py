"""Genes on disk: exact round trip, validation, and one-line errors for bad files and arguments."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import DATA, run_module
from helpers import tiny_gene

from learngene_jax import checkpointing
from learngene_jax.errors import ConversionError, GeneError, UserError
from learngene_jax.genes.io import load_gene, save_gene


@pytest.mark.parametrize("method", ["tleg", "sws"])
def test_round_trip_is_exact(tmp_path, method):
    _, _, gene = tiny_gene(method)
    save_gene(tmp_path / "g", gene)
    back = load_gene(tmp_path / "g")
    assert back.meta == gene.meta
    for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(gene.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_existing_gene_is_not_overwritten(tmp_path):
    _, _, gene = tiny_gene("tleg", seed=0)
    _, _, other = tiny_gene("tleg", seed=5)
    save_gene(tmp_path / "g", gene)
    with pytest.raises(UserError, match="already exists"):
        save_gene(tmp_path / "g", other)
    np.testing.assert_array_equal(load_gene(tmp_path / "g").params["pos_embed"], gene.params["pos_embed"])
    save_gene(tmp_path / "g", other, overwrite=True)
    np.testing.assert_array_equal(load_gene(tmp_path / "g").params["pos_embed"], other.params["pos_embed"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(UserError, match="no gene at"):
        load_gene(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not a learngene_jax gene"):
        load_gene(tmp_path / "empty")
    checkpointing.save_artifact(tmp_path / "model", {"w": np.zeros(3)}, {"kind": "model"})
    with pytest.raises(GeneError, match="holds a model checkpoint, not a gene"):
        load_gene(tmp_path / "model")


def test_gene_whose_arrays_do_not_match_its_metadata(tmp_path):
    _, _, gene = tiny_gene("tleg")
    params = dict(gene.params, pos_embed=np.zeros((1, 9, 48), np.float32))
    checkpointing.save_artifact(tmp_path / "g", params, {"kind": "gene", "gene": gene.meta.to_json()})
    with pytest.raises(GeneError, match=r"pos_embed has shape \(1, 9, 48\), expected \(1, 16, 48\)"):
        load_gene(tmp_path / "g")


def test_unknown_method_and_newer_format_in_metadata(tmp_path):
    _, _, gene = tiny_gene("sws")
    for change, message in (({"method": "lgpool9"}, "unknown learngene method 'lgpool9'"),
                            ({"format_version": 99}, "newer than this learngene_jax supports"),
                            ({"colour": "blue"}, "unknown keys \\['colour'\\]")):
        path = tmp_path / str(len(list(tmp_path.iterdir())))
        checkpointing.save_artifact(path, gene.params, {"kind": "gene", "gene": {**gene.meta.to_json(), **change}})
        with pytest.raises(GeneError, match=message):
            load_gene(path)


def test_truncated_gene_files(tmp_path):
    _, _, gene = tiny_gene("tleg")
    save_gene(tmp_path / "g", gene)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "g", broken)
    data_files = [p for p in (broken / "params").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert data_files
    for p in data_files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    with pytest.raises(UserError, match="unreadable \\(truncated or corrupt\\?\\)") as e:
        load_gene(broken)
    assert "\n" not in str(e.value)
    meta_only = tmp_path / "meta_only"
    shutil.copytree(tmp_path / "g", meta_only)
    (meta_only / "meta" / "metadata").write_text(json.dumps({"kind": "gene", "gene": {"method": "tleg"}})[:20])
    with pytest.raises(UserError, match="metadata at .* is unreadable"):
        load_gene(meta_only)


def test_truncated_official_checkpoint(tmp_path):
    pytest.importorskip("torch")
    from learngene_jax.convert.state_dict import read_state_dict

    src = (DATA / "official" / "tleg_aux.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(src[: len(src) // 2])
    with pytest.raises(ConversionError, match="cannot read .*cut.pth as a PyTorch checkpoint"):
        read_state_dict(tmp_path / "cut.pth")
    proc = run_module("learngene_jax.convert", "from-official", "--method", "tleg", "--checkpoint",
                      str(tmp_path / "cut.pth"), "--out", str(tmp_path / "g"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot read" in proc.stderr and not (tmp_path / "g").exists()


def _predict_tiny_gene(tmp_path, images, *extra):
    """`predict` on a tiny TLEG gene's aux model (32×32 inputs) with `images` saved as x.npy; `extra` flags last
    (a repeated flag overrides)."""
    _, _, gene = tiny_gene("tleg")
    save_gene(tmp_path / "g", gene)
    np.save(tmp_path / "x.npy", images)
    return run_module("learngene_jax.predict", "--gene", str(tmp_path / "g"), "--images", str(tmp_path / "x.npy"),
                      "--out", str(tmp_path / "y.npy"), *extra, check=False)


@pytest.mark.parametrize("args,message", [
    (["--depth", "0"], "descendant depth must be an integer >= 1, got 0"),
    (["--layers-source", "0,1"], "TLEG expansion takes no layers_source (that is SWS's); drop --layers-source"),
    (["--out", "DIR"], "--out: DIR is a directory; give a file path"),
])
def test_predict_cli_bad_arguments(tmp_path, args, message):
    args, message = [str(tmp_path) if a == "DIR" else a for a in args], message.replace("DIR", str(tmp_path))
    proc = _predict_tiny_gene(tmp_path, np.zeros((2, 32, 32, 3), np.float32), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


@pytest.mark.parametrize("images,message", [
    (np.full((2, 32, 32, 3), 200, np.uint8), "images are uint8 pixels; predict takes normalised float32 images"),
    (np.full((2, 32, 32, 3), 200.0, np.float32), "image values reach 200: these look like raw pixels"),
    (np.zeros((2, 16, 16, 3), np.float32), "images are 16×16 but the model takes 32×32; resize or crop them first"),
    (np.full((2, 32, 32, 3), np.nan, np.float32), "images contain NaN or infinite values"),
    (np.full((2, 32, 32, 3), 0.5, np.float32), "every value is within [0, 1]: these look like pixels scaled"),
    (np.zeros((0, 32, 32, 3), np.float32), "holds no images"),
    (np.zeros((2, 32, 32, 1), np.float32), "have no axis of 3 channels"),
])
def test_predict_refuses_images_that_would_give_silently_wrong_logits(tmp_path, images, message):
    proc = _predict_tiny_gene(tmp_path, images)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert message in proc.stderr and str(tmp_path / "x.npy") in proc.stderr
    assert not (tmp_path / "y.npy").exists()


def test_predict_cli_sws_unknown_stage(tmp_path):
    _, _, gene = tiny_gene("sws")
    save_gene(tmp_path / "g", gene)
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    proc = run_module("learngene_jax.predict", "--gene", str(tmp_path / "g"), "--layers-source", "0,1,7",
                      "--images", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: layers_source names unknown stages [7]; this gene has stages 0..2"]


def test_cli_reports_a_user_error_wrapped_by_a_library_as_one_line(capsys):
    """A UserError raised in a worker or callback and re-raised by a library as another exception is still one
    `error:` line with exit 2; any other exception keeps its traceback."""
    from learngene_jax.errors import DataError, run

    def wrapped(argv):
        try:
            raise DataError("cannot decode image /data/x.jpg (truncated); delete or replace the file")
        except DataError as e:
            raise RuntimeError("worker 3 failed") from e

    with pytest.raises(SystemExit) as e:
        run(wrapped, [])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: cannot decode image /data/x.jpg (truncated); delete or replace the file\n"

    def broken(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run(broken, [])


def test_long_key_reports_are_summarised_with_the_likely_cause():
    """366 problems used to be one 17 kB line: now counts by kind, the first few, and the cause when known (a LeViT
    checkpoint whose BatchNorm was folded into the convolutions has conv biases but no bn keys)."""
    from learngene_jax.convert.table import summarize_problems

    problems = [f"missing key stages.{i}.conv.bn.running_var" for i in range(300)] + [
        f"unexpected key stages.{i}.conv.c.bias" for i in range(66)]
    folded = {f"stages.{i}.conv.c.bias": None for i in range(66)}
    text = summarize_problems(problems, folded)
    assert text.startswith("366 problems (300 missing, 66 unexpected): missing key stages.0.conv.bn.running_var;")
    assert "… and 360 more" in text and "BatchNorm was probably folded into the convolutions" in text
    assert len(text) < 800
    other = summarize_problems(["missing key a.weight", "unexpected key b.weight"], {"b.weight": None})
    assert other.endswith("this is probably another architecture or a differently wrapped checkpoint")
    assert "more" not in other


@pytest.mark.parametrize("extra,message", [
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--out", "/nonexistent/dir/y.npy"], "--out: no directory /nonexistent/dir; create it first"),
])
def test_predict_bad_flags_are_one_line(tmp_path, extra, message):
    proc = _predict_tiny_gene(tmp_path, np.full((2, 32, 32, 3), -0.5, np.float32), *extra)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_config_booleans_are_strict():
    from learngene_jax.config_lib import parse_arg
    from learngene_jax.errors import ConfigError

    assert parse_arg("smoke=True", {"smoke": False}) == {"smoke": True}
    assert parse_arg("smoke=0", {"smoke": True}) == {"smoke": False}
    for typo in ("maybe", "ture", ""):
        with pytest.raises(ConfigError, match="must be true or false"):
            parse_arg(f"smoke={typo}", {"smoke": False})
