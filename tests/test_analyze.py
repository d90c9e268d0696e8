"""Layer-linearity analysis: exact on a TLEG model, low on random layers, runs on model dirs, genes and timm."""

import json

import jax
import numpy as np
import pytest
from conftest import run_module
from helpers import tiny_gene

from learngene_jax import genes
from learngene_jax.analyze import line_fits, linearity_report
from learngene_jax.genes.io import save_gene
from learngene_jax.models import create_model
from learngene_jax.models.io import save_model


def test_exactly_linear_layers_have_r2_one():
    _, _, gene = tiny_gene("tleg")
    report = linearity_report(genes.expand(gene, 7))
    assert len(report) == 12  # six sub-layers x (weight, bias)
    for name, r in report.items():
        assert r["r2_line"] == pytest.approx(1.0, abs=1e-9), name
        assert r["r2_depth"] == pytest.approx(1.0, abs=1e-9), name


def test_random_layers_are_far_from_a_line():
    model = create_model("vit", width=48, num_heads=3, image_size=32, patch_size=8, depth=12, num_classes=10)
    params = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
    report = linearity_report(params)
    for name in ("qkv/kernel", "fc1/kernel", "proj/kernel"):
        assert report[name]["r2_line"] < 0.2, report[name]["r2_line"]  # ~1/(L-1) for independent layers
        assert report[name]["r2_depth"] < 0.2
    assert np.isnan(report["fc1/bias"]["r2_line"])  # all-zero biases: no spread, so no fit (not a perfect one)


def test_known_partial_linearity():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(500), rng.standard_normal(500)
    depth = 10
    line = np.stack([b + (i / depth) * a for i in range(depth)])
    noise = 0.01 * rng.standard_normal(line.shape)
    fits = line_fits(line + noise)
    assert 0.99 < fits["r2_line"] < 1.0 and 0.99 < fits["r2_depth"] < 1.0
    # same points, positions no longer l/L: on an exact line r2_depth is the squared correlation of the order with
    # l, 0.0018 for this fixed order (a random one can come out near the identity or its reverse, r2_depth ≈ 1)
    shuffled = line[[5, 0, 9, 3, 7, 1, 8, 4, 2, 6]]
    assert line_fits(shuffled)["r2_line"] == pytest.approx(1.0, abs=1e-9)
    assert line_fits(shuffled)["r2_depth"] < 0.01


def test_cli_on_gene_and_model_dir(tmp_path):
    _, _, gene = tiny_gene("tleg")
    save_gene(tmp_path / "gene", gene)
    run_module("learngene_jax.analyze", "linearity", "--checkpoint", str(tmp_path / "gene"), "--out",
               str(tmp_path / "a"))
    report = json.loads((tmp_path / "a" / "linearity.json").read_text())
    assert all(abs(r["r2_line"] - 1) < 1e-6 for r in report["params"].values())
    assert (tmp_path / "a" / "linearity.png").stat().st_size > 1000
    model = create_model("vit", width=32, num_heads=2, image_size=16, patch_size=4, depth=4, num_classes=10)
    save_model(tmp_path / "m", model, model.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32)))
    out = run_module("learngene_jax.analyze", "linearity", "--checkpoint", str(tmp_path / "m")).stdout
    assert "| qkv/kernel | 4 |" in out


@pytest.mark.torch
def test_cli_on_a_timm_state_dict(tmp_path, timm):
    import torch

    ref = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=5,
                                                           num_heads=3, num_classes=10)
    torch.save(ref.state_dict(), tmp_path / "vit.pth")
    out = run_module("learngene_jax.analyze", "linearity", "--checkpoint", str(tmp_path / "vit.pth")).stdout
    assert "timm ViT state dict (5 blocks, width 48)" in out and "| fc2/kernel | 5 |" in out
