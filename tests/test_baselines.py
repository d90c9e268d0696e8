"""Initialisation baselines: weight selection, pre-train then fine-tune, and the analytic FLOP count."""

import jax
import numpy as np
import pytest
from conftest import randomize
from helpers import tiny_train_config

from learngene_jax.methods.weight_selection.select import uniform_indices, weight_selection
from learngene_jax.models import create_model
from learngene_jax.models.cost import vit_macs
from learngene_jax.models.io import save_model
from learngene_jax.train import build_student

X = np.random.default_rng(0).standard_normal((3, 16, 16, 3)).astype(np.float32)


def vit(**kw):
    return create_model("vit", **{"width": 64, "num_heads": 4, "patch_size": 4, "image_size": 16, "depth": 4,
                                  "num_classes": 10, **kw})


def init(model, seed=0):
    return randomize(model.init(jax.random.key(seed), X[:1])["params"], seed)


def test_uniform_indices():
    np.testing.assert_array_equal(uniform_indices(8, 4), [0, 2, 4, 6])
    np.testing.assert_array_equal(uniform_indices(6, 6), np.arange(6))
    np.testing.assert_array_equal(uniform_indices(10, 3), [0, 3, 6])


def test_weight_selection_shapes_and_elements():
    big, small = vit(), vit(width=32, num_heads=2, depth=2)
    source = init(big)
    fresh = small.init(jax.random.key(1), X[:1])["params"]
    params = weight_selection(source, big, small, fresh)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(fresh), strict=True):
        assert np.shape(a) == np.shape(b)
    d = np.arange(0, 64, 2)
    np.testing.assert_array_equal(params["blocks"]["fc1"]["kernel"], source["blocks"]["fc1"]["kernel"][:2][:, d][
        :, :, np.arange(0, 256, 2)])
    q_rows = np.concatenate([d, 64 + d, 128 + d])
    np.testing.assert_array_equal(params["blocks"]["qkv"]["bias"], source["blocks"]["qkv"]["bias"][:2][:, q_rows])
    np.testing.assert_array_equal(params["pos_embed"], source["pos_embed"][..., d])
    np.testing.assert_array_equal(params["head"]["kernel"], source["head"]["kernel"][d])
    logits = small.apply({"params": params}, X)
    assert np.isfinite(logits).all()


def test_weight_selection_of_the_same_architecture_is_the_identity():
    model = vit()
    source = init(model)
    params = weight_selection(source, model, model, model.init(jax.random.key(3), X[:1])["params"])
    np.testing.assert_array_equal(model.apply({"params": params}, X), model.apply({"params": source}, X))


def test_weight_selection_keeps_a_fresh_head_for_new_classes_and_maps_norms():
    big = create_model("deit_ti", image_size=16, patch_size=4, num_classes=10, depth=3)
    small = vit(width=96, num_heads=2, depth=2, num_classes=7)
    source = init(big)
    fresh = small.init(jax.random.key(1), X[:1])["params"]
    params = weight_selection(source, big, small, fresh)
    np.testing.assert_array_equal(params["head"]["kernel"], fresh["head"]["kernel"])
    np.testing.assert_array_equal(params["fc_norm"]["scale"], source["norm"]["scale"][uniform_indices(192, 96)])
    with pytest.raises(Exception, match="first N blocks"):
        weight_selection(source, big, vit(width=96, num_heads=2, depth=5), fresh)


def test_pretrain_then_finetune_starts_with_the_ancestor_function(tmp_path):
    ancestor = vit(width=32, num_heads=2, depth=3)
    variables = {"params": init(ancestor, 4)}
    save_model(tmp_path / "ancestor", ancestor, variables)
    cfg = tiny_train_config(init=str(tmp_path / "ancestor"))
    student = build_student(cfg, num_classes=10)
    start = student.init(jax.random.key(0), student.source)
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    # the student runs its blocks with lax.scan (config), the ancestor unrolled: same function to float rounding
    np.testing.assert_allclose(student.model.apply(start, X), ancestor.apply(variables, X), atol=1e-6, rtol=0)
    selected = build_student(tiny_train_config(**{"init": str(tmp_path / "ancestor"),
                                                 "init_method": "weight_selection", "model.depth": 2}), 10)
    params = selected.init(jax.random.key(0), selected.source)["params"]
    np.testing.assert_array_equal(params["blocks"]["fc1"]["kernel"], variables["params"]["blocks"]["fc1"]["kernel"][:2])


def test_forward_macs_match_published_counts():
    assert vit_macs(create_model("deit_s")) == pytest.approx(4.6e9, rel=0.01)
    assert vit_macs(create_model("deit_ti")) == pytest.approx(1.26e9, rel=0.02)
    assert vit_macs(create_model("vit_b")) == pytest.approx(17.5e9, rel=0.02)
