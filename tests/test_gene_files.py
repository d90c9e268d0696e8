"""Genes as one .safetensors file and in the Hugging Face layout: exact round trips, PyTorch reading the files,
one-line errors for bad files, repo ids read from the local cache only, and the converter's subcommands."""

import functools
import json
import socket

import jax
import numpy as np
import pytest
from conftest import run_module
from helpers import TINY

from learngene_jax import genes, hub
from learngene_jax.convert import state_dict, vit
from learngene_jax.convert.__main__ import main as convert_main
from learngene_jax.convert.table import flatten
from learngene_jax.errors import GeneError, UserError
from learngene_jax.genes.core import Gene
from learngene_jax.genes.files import (
    GENE_KEY,
    header,
    load_gene_safetensors,
    save_gene_safetensors,
    write_tree,
)
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.models import create_model
from learngene_jax.models.io import abstract_variables, load_model, save_model
from learngene_jax.models.vit import abstract_params

VGG = dict(num_classes=3, image_size=16, widths=(4, 4, 6, 6, 8, 8), pool_after=(1, 3), hidden=(16,))
AUX = {"tleg": dict(TINY, depth=4), "sws": dict(TINY, depth=5, stage_sizes=(2, 1, 2))}


def random_like(shapes, seed):
    """Random arrays of `shapes` (a tree of ShapeDtypeStructs); BatchNorm variances stay positive. Nothing is
    compiled, which keeps this file fast."""
    rng = np.random.default_rng(seed)
    tree = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), dict(shapes))
    if "batch_stats" in tree:
        tree["batch_stats"] = jax.tree.map(lambda a: np.abs(a) + 0.5, tree["batch_stats"])
    return tree


@functools.cache
def make_gene(method, seed=0):
    """A gene of a tiny architecture (TLEG/SWS aux ViTs, a Heur VGG ancestor with BN statistics) with random arrays
    of the method's gene shapes."""
    model = create_model("vgg_ancestor", **VGG) if method == "heur" else create_model(f"{method}_aux", **AUX[method])
    meta = genes.get_method(method).meta_from_aux(model)
    return Gene(random_like(genes.get_method(method).gene_shapes(meta), seed), meta)


def vgg_model():
    """A small VGG ancestor (params and batch_stats) with random variables."""
    model = create_model("vgg_ancestor", **VGG)
    return model, random_like(abstract_variables(model), 1)


def vit_model():
    """A tiny timm-layout ViT (class token, token pooling, norm) with random params."""
    model = create_model("vit", num_classes=10, image_size=32, patch_size=8, width=48, depth=2, num_heads=3,
                         class_token=True, pool="token", final_norm="norm")
    return model, random_like(abstract_variables(model), 2)


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


def assert_same_gene(a, b):
    assert a.meta == b.meta
    assert_same_tree(a.params, b.params)


@pytest.mark.parametrize("method", ["tleg", "sws", "heur"])
def test_safetensors_round_trip_is_exact(tmp_path, method):
    gene = make_gene(method)
    save_gene_safetensors(gene, tmp_path / "g.safetensors")
    assert_same_gene(load_gene_safetensors(tmp_path / "g.safetensors"), gene)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]


@pytest.mark.torch
@pytest.mark.parametrize("method", ["tleg", "heur"])
def test_pytorch_reads_the_gene_file(tmp_path, method):
    """safetensors.torch.load_file gives the arrays under their param paths; the header's JSON is the metadata."""
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    from safetensors.torch import load_file

    gene = make_gene(method)
    save_gene_safetensors(gene, tmp_path / "g.safetensors")
    tensors = load_file(str(tmp_path / "g.safetensors"))
    flat = flatten(gene.params)
    assert sorted(tensors) == sorted(flat)
    for key, tensor in tensors.items():
        assert isinstance(tensor, torch.Tensor)
        np.testing.assert_array_equal(tensor.numpy(), flat[key])
    with safe_open(str(tmp_path / "g.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert genes.meta_from_json(json.loads(metadata[GENE_KEY])) == gene.meta
    assert metadata["learngene_jax.format"] == "gene" and metadata["learngene_jax.format_version"] == "1"


def _truncated(path, gene):
    save_gene_safetensors(gene, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _plain_weights(path, gene):
    _, variables = vit_model()
    state_dict.write_safetensors(path, vit.to_timm(variables["params"]))


def _misshaped(path, gene):
    params = dict(gene.params, pos_embed=np.zeros((1, 9, 48), np.float32))
    write_tree(path, params, header("gene", **{GENE_KEY: json.dumps(gene.meta.to_json())}))


def _missing_array(path, gene):
    params = {k: v for k, v in gene.params.items() if k != "head"}
    write_tree(path, params, header("gene", **{GENE_KEY: json.dumps(gene.meta.to_json())}))


def _unknown_method(path, gene):
    write_tree(path, gene.params, header("gene", **{GENE_KEY: json.dumps({**gene.meta.to_json(), "method": "x9"})}))


def _newer_format(path, gene):
    metadata = header("gene", **{GENE_KEY: json.dumps(gene.meta.to_json())})
    write_tree(path, gene.params, {**metadata, "learngene_jax.format_version": "7"})


def _model_weights(path, gene):
    _, variables = vit_model()
    write_tree(path, variables, header("model"))


@pytest.mark.parametrize("build,message", [
    (None, "no gene file at"),
    (_truncated, "cannot read gene file .* as safetensors \\(truncated or corrupt\\?\\)"),
    (_plain_weights, "is a safetensors file but not a learngene_jax gene: its header has no learngene_jax metadata "
                     "\\(plain timm/PyTorch weights\\?\\); convert timm weights into a model with .*from-timm"),
    (_misshaped, "does not match its own metadata \\(tleg gene\\): pos_embed has shape \\(1, 9, 48\\), expected "
                 "\\(1, 16, 48\\); export the gene again"),
    (_missing_array, "does not match its own metadata \\(tleg gene\\): missing head"),
    (_unknown_method, "unknown learngene method 'x9'; known methods: .*tleg"),
    (_newer_format, "format version 7, newer than this learngene_jax reads \\(1; .*upgrade learngene_jax"),
    (_model_weights, "holds a learngene_jax model, not a gene; load its directory with .*from_pretrained"),
], ids=["missing", "truncated", "plain_weights", "misshaped", "missing_array", "unknown_method", "newer_format",
        "model_weights"])
def test_bad_gene_files_are_one_line_naming_the_file(tmp_path, build, message):
    path = tmp_path / "g.safetensors"
    if build is not None:
        build(path, make_gene("tleg"))
    with pytest.raises(GeneError, match=message) as e:
        load_gene_safetensors(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_gene_directory_is_not_a_gene_file(tmp_path):
    save_gene(tmp_path / "g", make_gene("tleg"))
    with pytest.raises(GeneError, match="is a directory, not a .safetensors gene file; Orbax gene directories are "
                                        "read with .*load_gene"):
        load_gene_safetensors(tmp_path / "g")


def test_existing_file_is_not_overwritten(tmp_path):
    gene, other = make_gene("tleg", 0), make_gene("tleg", 5)
    path = tmp_path / "g.safetensors"
    save_gene_safetensors(gene, path)
    with pytest.raises(UserError, match="already exists; choose another file or pass --overwrite"):
        save_gene_safetensors(other, path)
    assert_same_gene(load_gene_safetensors(path), gene)
    save_gene_safetensors(other, path, overwrite=True)
    assert_same_gene(load_gene_safetensors(path), other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]
    with pytest.raises(UserError, match="does not end in .safetensors"):
        save_gene_safetensors(gene, tmp_path / "g.pt")


@pytest.mark.parametrize("method", ["tleg", "heur"])
def test_save_pretrained_gene_round_trip(tmp_path, method):
    gene = make_gene(method)
    hub.save_pretrained(gene, tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["kind"] == "gene" and genes.meta_from_json(config["gene"]) == gene.meta
    assert "library_name: learngene_jax" in (tmp_path / "hf" / "README.md").read_text()
    back = hub.from_pretrained(tmp_path / "hf")
    assert_same_gene(back, gene)
    if method == "tleg":
        assert_same_tree(genes.expand(back, 3), genes.expand(gene, 3))
    with pytest.raises(UserError, match="already holds config.json, model.safetensors, README.md; choose another "
                                        "directory or pass --overwrite"):
        hub.save_pretrained(gene, tmp_path / "hf")
    hub.save_pretrained(gene, tmp_path / "hf", overwrite=True)


@pytest.mark.parametrize("build", [vit_model, vgg_model], ids=["vit", "vgg_batch_stats"])
def test_save_pretrained_model_round_trip_gives_identical_outputs(tmp_path, build):
    model, variables = build()
    save_model(tmp_path / "model", model, variables)
    loaded, loaded_vars = load_model(tmp_path / "model")
    hub.save_pretrained((loaded, loaded_vars), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["kind"] == "model" and config["model_spec"]["model"] == ("vit" if build is vit_model else
                                                                           "vgg_ancestor")
    back, back_vars = hub.from_pretrained(str(tmp_path / "hf"))
    assert back == loaded and sorted(back_vars) == sorted(variables)
    assert_same_tree(back_vars, jax.tree.map(np.asarray, variables))
    x = np.random.default_rng(3).standard_normal((2, model.image_size, model.image_size, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.apply(back_vars, x), model.apply(variables, x))
    with pytest.raises(GeneError, match="holds a learngene_jax model, not a gene"):
        load_gene_safetensors(tmp_path / "hf" / "model.safetensors")


@pytest.fixture
def offline_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp_path, offline mode, and every socket connection refused."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variables once, at import: point the already-imported module there too.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("from_pretrained tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path / "hf_home" / "hub"


def test_from_pretrained_reads_repo_ids_from_the_local_cache_only(offline_hf_cache):
    with pytest.raises(UserError) as e:
        hub.from_pretrained("someone/not-cached")
    message = str(e.value)
    assert "the Hugging Face repo someone/not-cached is not (fully) in the local cache" in message
    assert "`hf download someone/not-cached`" in message and "`huggingface-cli download someone/not-cached`" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="no directory /no/such/dir/gene, and '/no/such/dir/gene' is not a Hugging "
                                        "Face repo id"):
        hub.from_pretrained("/no/such/dir/gene")
    # a repo that `hf download` put in the cache: refs/main names the snapshot
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hf_cache / "models--someone--tiny-gene"
    gene = make_gene("sws")
    hub.save_pretrained(gene, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert_same_gene(hub.from_pretrained("someone/tiny-gene"), gene)


def test_from_pretrained_refuses_foreign_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json: not a directory written by learngene_jax"):
        hub.from_pretrained(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="was not written by learngene_jax \\(library_name: no library\\)"):
        hub.from_pretrained(tmp_path / "bert")


def test_from_timm_takes_timm_names_and_checks_them_against_the_shapes(tmp_path):
    """--arch deit_tiny_patch16_224 sets heads 3 and eps 1e-6 (not readable from shapes) on a DeiT-Ti checkpoint;
    a timm name never overrides flags silently."""
    model = create_model("deit_tiny_patch16_224", num_classes=7)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), abstract_params(model))
    state_dict.write_safetensors(tmp_path / "deit.safetensors", vit.to_timm(params))
    convert_main(["from-timm", "--checkpoint", str(tmp_path / "deit.safetensors"), "--out", str(tmp_path / "m"),
                  "--arch", "deit_tiny_patch16_224"])
    back, variables = load_model(tmp_path / "m")
    assert (back.num_heads, back.eps, back.num_classes, back.width, back.depth) == (3, 1e-6, 7, 192, 12)
    assert back == model
    assert_same_tree(variables["params"], params)
    with pytest.raises(UserError, match="deit_tiny_patch16_224 fixes its heads and eps"):
        convert_main(["from-timm", "--checkpoint", str(tmp_path / "deit.safetensors"), "--out", str(tmp_path / "n"),
                      "--arch", "deit_tiny_patch16_224", "--num-heads", "4"])


# -- the converter's subcommands, as a user runs them --------------------------------------------------------


def test_cli_gene_files_and_save_pretrained(tmp_path):
    gene = make_gene("tleg")
    save_gene(tmp_path / "g", gene)
    proc = run_module("learngene_jax.convert", "gene-to-safetensors", "--gene", str(tmp_path / "g"),
                      "--out", str(tmp_path / "g.safetensors"))
    assert "wrote tleg gene" in proc.stdout
    assert_same_gene(load_gene_safetensors(tmp_path / "g.safetensors"), gene)
    run_module("learngene_jax.convert", "safetensors-to-gene", "--file", str(tmp_path / "g.safetensors"),
               "--out", str(tmp_path / "back"))
    assert_same_gene(load_gene(tmp_path / "back"), gene)
    run_module("learngene_jax.convert", "save-pretrained", "--gene", str(tmp_path / "back"),
               "--out", str(tmp_path / "hf"))
    assert_same_gene(hub.from_pretrained(tmp_path / "hf"), gene)


def test_cli_save_pretrained_model(tmp_path):
    model, variables = vgg_model()
    save_model(tmp_path / "model", model, variables)
    run_module("learngene_jax.convert", "save-pretrained", "--model", str(tmp_path / "model"),
               "--out", str(tmp_path / "hf"))
    back, back_vars = hub.from_pretrained(tmp_path / "hf")
    x = np.random.default_rng(4).standard_normal((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.apply(back_vars, x), model.apply(variables, x))


def _one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_cli_bad_gene_file_is_one_line(tmp_path):
    _truncated(tmp_path / "cut.safetensors", make_gene("tleg"))
    proc = run_module("learngene_jax.convert", "safetensors-to-gene", "--file", str(tmp_path / "cut.safetensors"),
                      "--out", str(tmp_path / "g"), check=False)
    assert "cut.safetensors as safetensors (truncated or corrupt?)" in _one_line_error(proc)
    assert not (tmp_path / "g").exists()


def test_cli_timm_name_that_does_not_fit_the_checkpoint(tmp_path):
    _, variables = vit_model()
    state_dict.write_safetensors(tmp_path / "v.safetensors", vit.to_timm(variables["params"]))
    proc = run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "v.safetensors"),
                      "--out", str(tmp_path / "m"), "--arch", "vit_small_patch16_224", check=False)
    line = _one_line_error(proc)
    assert ("the checkpoint is not vit_small_patch16_224 (checkpoint vs vit_small_patch16_224): width 48 vs 384, "
            "depth 2 vs 12, patch size 8 vs 16, image size 32 vs 224, MLP width 192 vs 1536; pass the timm "
            "name") in line
    assert not (tmp_path / "m").exists()
