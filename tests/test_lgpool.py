"""Learngene Pool: feature capture, stitch configurations, least-squares init, identity stitching, trained
projections, the stage-1 loss against the formula by hand, exported descendants (and timm), costs, per-step config
sampling, the DeiT recipe's stages, and an end-to-end smoke run."""

import importlib.util
import json
import math
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_module

from learngene_jax.config_lib import base_config, with_changes
from learngene_jax.methods.lgpool import objectives  # noqa: F401 - registers the objectives
from learngene_jax.methods.lgpool import run as lgpool_run
from learngene_jax.methods.lgpool.descendants import (
    assemble_pool,
    block_inputs,
    config_cost,
    export_config,
    init_stitches,
    init_stitches_from_projections,
    least_squares_stitch,
    projection_stitch,
)
from learngene_jax.methods.lgpool.models import (
    DEIT_LAYOUT,
    LearngenePool,
    PoolStudent,
    StitchedViT,
    distill_points,
    instance_of,
    paired_stitching,
    parse_pairs,
    stitch_configs,
)
from learngene_jax.models import create_model
from learngene_jax.models.io import load_model, save_model
from learngene_jax.models.vit import ViT, attention, classify, count_params, embed_tokens, layer_norm
from learngene_jax.objectives.classification import StepInputs, make_objective
from learngene_jax.objectives.teacher import Teacher
from learngene_jax.stages import stage_config
from learngene_jax.train import build_student

SMALL = dict(num_classes=10, image_size=16, patch_size=4, **DEIT_LAYOUT)
TOL = dict(atol=2e-5, rtol=2e-5)


def images(n=4, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, 16, 16, 3))


@partial(jax.jit, static_argnums=0)
def apply(model, params, x):
    """Eval-mode logits, one compile per architecture (modules are hashable by their fields)."""
    return model.apply({"params": params}, x)


@partial(jax.jit, static_argnums=0)
def apply_config(pool, params, x, config_id):
    """A pool configuration's logits with a traced config id: one compile per pool."""
    return pool.apply({"params": params}, x, config_id=config_id)


def random_params(model, seed=0):
    """A model's param tree filled with random values straight from its shapes (no compile, no init run):
    norm scales 1 + 0.1·N(0, 1), everything else 0.1·N(0, 1), so zero biases / unit norms hide nothing."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        noise = 0.1 * rng.standard_normal(s.shape).astype(np.float32)
        return jnp.asarray(noise + (path[-1].key == "scale"))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def random_instances(pool: LearngenePool, seed: int = 0):
    """Random instance param trees, one per instance of `pool`."""
    return [random_params(vit, seed + k) for k, vit in enumerate(pool.instance_models())]


@pytest.fixture(scope="module")
def mixed_pool():
    """Widths 16 and 32 (a linear stitch), depth 3, with least-squares stitches on random instances."""
    pool = LearngenePool(widths=(16, 32), heads=(2, 2), depth=3, pairs=("0-1",), **SMALL)
    return pool, assemble_pool(pool, random_instances(pool), images(8, seed=7))


# --- configurations ------------------------------------------------------------------------------------------

def test_paired_stitching_counts_and_enumeration():
    six = paired_stitching(6)
    assert len(six) == 16 and len(paired_stitching(9)) == 25
    assert len({s for *_, s in six}) == 5 and len({s for *_, s in paired_stitching(9)}) == 8
    # SN-Net's order: window [0,1] gives four configs on layer 0, every later window three on its own layer
    assert six == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 2, 1), (2, 1, 1), (2, 2, 1), (2, 3, 2),
                   (3, 2, 2), (3, 3, 2), (3, 4, 3), (4, 3, 3), (4, 4, 3), (4, 5, 4), (5, 4, 4), (5, 5, 4)]
    pool = LearngenePool(widths=(192, 384, 768), heads=(3, 6, 12), depth=9, pairs=("0-1", "1-2"))
    assert len(pool.configs()) == 3 + 2 * 25 and pool.num_stitch_layers() == 8
    assert len(stitch_configs(2, [(0, 1)], 6)) == 18  # the official 12-instance pool: Ti, B and 16 stitches


def test_bad_pairs_and_points_are_one_line_errors():
    with pytest.raises(ValueError, match="must name two different instances"):
        parse_pairs(("0-2",), 2)
    with pytest.raises(ValueError, match="'FRONT-END'"):
        parse_pairs(("01",), 2)
    with pytest.raises(ValueError, match="need a student depth of at least 3"):
        distill_points(2, 12, 3)


def test_official_distillation_points():
    # criterion of the official code: thirds of the depth, teacher blocks 3, 7, 11 for DeiT-B
    assert distill_points(9, 12, 3) == ((2, 3), (5, 7), (8, 11))
    assert distill_points(6, 12, 3) == ((1, 3), (3, 7), (5, 11))
    assert distill_points(9, 12, 2) == ((5, 7), (8, 11))
    assert distill_points(6, 12, 1) == ((5, 11),)


# --- ViT feature capture and functional twins -----------------------------------------------------------------

def test_capture_returns_block_and_attention_outputs():
    vit = ViT(width=16, depth=3, num_heads=2, **SMALL)
    params, x = random_params(vit), images()
    plain = jax.jit(vit.apply)({"params": params}, x)
    logits, inter = jax.jit(partial(vit.apply, capture=True))({"params": params}, x)
    np.testing.assert_allclose(plain, logits, **TOL)
    assert inter["blocks"].shape == inter["attn"].shape == (3, 4, 17, 16)
    np.testing.assert_allclose(inter["embed"], embed_tokens(vit, params, x), **TOL)
    # 'attn' is the attention sub-layer's own output attn(LN1 x), before the residual add
    first = jax.tree.map(lambda a: a[0], params["blocks"])
    attn = attention(layer_norm(inter["embed"], first["norm1"], vit.eps), first["qkv"], first["proj"], 2)
    np.testing.assert_allclose(inter["attn"][0], attn, **TOL)
    np.testing.assert_allclose(classify(vit, params, inter["blocks"][-1]), logits, **TOL)  # last block → head
    _, scanned = jax.jit(partial(vit.clone(scan_layers=True).apply, capture=True))({"params": params}, x)
    for key in ("blocks", "attn"):
        np.testing.assert_allclose(scanned[key], inter[key], **TOL)


# --- stitching ------------------------------------------------------------------------------------------------

def test_least_squares_recovers_a_known_affine_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 50, 12)).astype(np.float32)  # (batch, tokens, D_front)
    w = rng.standard_normal((12, 20)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    kernel, bias = least_squares_stitch(x, x @ w + b)
    np.testing.assert_allclose(kernel, w, atol=1e-4)
    np.testing.assert_allclose(bias, b, atol=1e-4)


def test_stitch_init_averages_the_configs_that_share_a_layer(mixed_pool):
    pool, params = mixed_pool
    instances = [params["instances"][k] for k in ("0", "1")]
    x = images(8, seed=7)
    feats = [block_inputs(vit, p, x) for vit, p in zip(pool.instance_models(), instances, strict=True)]

    def pinv_solution(i, j):  # SN-Net's ps_inv formula: [X, 1]⁺ Y
        a = feats[0][i + 1].reshape(-1, 16).astype(np.float64)
        y = feats[1][j].reshape(-1, 32).astype(np.float64)
        sol = np.linalg.pinv(np.concatenate([a, np.ones((len(a), 1))], 1)) @ y
        return sol[:-1], sol[-1]

    # depth 3: layer 0 serves (0,0), (0,1), (1,0), (1,1); layer 1 serves (1,2), (2,1), (2,2)
    got = init_stitches(pool, instances, x)["0-1"]
    for layer, cfgs in ((0, [(0, 0), (0, 1), (1, 0), (1, 1)]), (1, [(1, 2), (2, 1), (2, 2)])):
        solutions = [pinv_solution(i, j) for i, j in cfgs]
        np.testing.assert_allclose(got["kernel"][layer], np.mean([s[0] for s in solutions], 0), atol=1e-3)
        np.testing.assert_allclose(got["bias"][layer], np.mean([s[1] for s in solutions], 0), atol=1e-3)


def test_projection_stitch_carries_front_features_back_through_the_teacher():
    rng = np.random.default_rng(0)
    # P_front (teacher 32 → 16) with orthonormal columns, at 3 points that average to it; teacher features that
    # lie in its span: front = T·P, and the stitch (end at the teacher's width) must give T back exactly.
    q = np.linalg.qr(rng.standard_normal((32, 16)))[0]
    noise = rng.standard_normal((3, 32, 16))
    p_front = q[None] + noise - noise.mean(0)
    teacher = rng.standard_normal((50, 16)) @ q.T
    kernel, bias = projection_stitch(p_front, None)
    assert kernel.shape == (16, 32) and not bias.any()
    np.testing.assert_allclose((teacher @ q) @ kernel + bias, teacher, atol=1e-5)
    # an end of another width: composed through the teacher, P̄_frontᵀ·P̄_end (the official Ti→S form)
    p_end = rng.standard_normal((1, 32, 24))
    kernel, bias = projection_stitch(p_front, p_end)
    np.testing.assert_allclose(kernel, q.T @ p_end[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="teachers of widths 32 and 48"):
        projection_stitch(p_front, rng.standard_normal((1, 48, 24)))


def test_pool_from_projections_gives_every_layer_of_a_pair_the_same_map(mixed_pool):
    pool, _ = mixed_pool  # widths 16 → 32, a teacher of width 32 (the end instance's)
    rng = np.random.default_rng(1)
    projections = [{"blocks": {"kernel": rng.standard_normal((n, 32, w)).astype(np.float32)},
                    "attn": {"kernel": rng.standard_normal((n, 32, w)).astype(np.float32)}}
                   for n, w in ((3, 16), (1, 32))]
    instances = random_instances(pool)
    stitches = assemble_pool(pool, instances, stitch_init="projections", projections=projections)["stitches"]
    expected = projections[0]["blocks"]["kernel"].mean(0).T  # end = teacher width: P̄_frontᵀ (official Ti→B)
    assert stitches["0-1"]["kernel"].shape == (2, 16, 32)  # depth 3: two stitch layers
    for layer in range(2):
        np.testing.assert_allclose(stitches["0-1"]["kernel"][layer], expected, rtol=1e-5, atol=1e-6)
        assert not np.asarray(stitches["0-1"]["bias"][layer]).any()
    np.testing.assert_allclose(init_stitches_from_projections(pool, projections)["0-1"]["kernel"],
                               stitches["0-1"]["kernel"])
    with pytest.raises(ValueError, match="needs the stage-1 projections"):
        assemble_pool(pool, instances, stitch_init="projections")
    with pytest.raises(ValueError, match="needs a batch of images"):
        assemble_pool(pool, instances, stitch_init="least_squares")
    with pytest.raises(ValueError, match="stitch_init must be one of"):
        assemble_pool(pool, instances, images(), stitch_init="ridge")


def test_identity_stitch_equals_the_concatenated_instances():
    pool = LearngenePool(widths=(16, 16), heads=(2, 2), depth=3, pairs=("0-1",), **SMALL)
    instances = random_instances(pool)
    params = assemble_pool(pool, instances, images())
    assert "stitches" not in params  # equal widths: the stitch is the identity and owns no params
    x = images()
    for cid in (3, 6, 4):  # (0,1): 1 + 2 blocks, (1,2): 2 + 1 blocks, (1,0): 2 + 3 blocks
        cfg = pool.configs()[cid]
        front, end = instances[cfg.front], instances[cfg.end]
        blocks = jax.tree.map(lambda a, b, c=cfg: jnp.concatenate([a[:c.front_last + 1], b[c.end_first:]]),
                              front["blocks"], end["blocks"])
        plain = {"patch_embed": front["patch_embed"], "cls_token": front["cls_token"],
                 "pos_embed": front["pos_embed"], "blocks": blocks, "norm": end["norm"], "head": end["head"]}
        depth = cfg.front_last + 1 + 3 - cfg.end_first
        expected = apply(ViT(width=16, depth=depth, num_heads=2, **SMALL), plain, x)
        np.testing.assert_allclose(apply_config(pool, params, x, jnp.int32(cid)), expected, **TOL)
    # a Python int compiles that one configuration alone (the trainer's eval path): same logits
    static = jax.jit(lambda p, x: pool.apply({"params": p}, x, config_id=4))(params, x)
    np.testing.assert_allclose(static, expected, **TOL)


def test_exported_descendants_give_the_configs_logits(mixed_pool, tmp_path):
    pool, params = mixed_pool
    x = images()
    for cid in (1, 5):  # w32 alone (a plain ViT); (1,1): 2 blocks of w16, a stitch, 2 blocks of w32
        model, descendant = export_config(pool, params, cid)
        assert type(model) is (ViT if cid == 1 else StitchedViT)
        expected = apply_config(pool, params, x, jnp.int32(cid))
        np.testing.assert_allclose(apply(model, descendant, x), expected, **TOL)
    # a stitched descendant survives a model-directory round trip
    save_model(tmp_path / "des", model, {"params": descendant})
    loaded, variables = load_model(tmp_path / "des")
    assert loaded == model and loaded.front_depth == 2 and loaded.end_depth == 2
    np.testing.assert_allclose(apply(loaded, variables["params"], x), expected, **TOL)
    # its params: the two parts and the one stitch layer of this config, nothing else of the pool
    assert set(descendant) == {"front", "stitch", "end"} and descendant["stitch"]["kernel"].shape == (16, 32)
    assert pool.configs()[5].layer == 0  # (1,1) is in the first window
    np.testing.assert_array_equal(descendant["stitch"]["kernel"], params["stitches"]["0-1"]["kernel"][0])
    for cid, cfg in enumerate(pool.configs()):
        assert count_params(export_config(pool, params, cid)[1]) == config_cost(pool, cfg)[0]


@pytest.mark.torch
def test_exported_plain_descendant_runs_in_timm(timm):
    import torch

    from learngene_jax.convert import vit as convert

    pool = LearngenePool(widths=(16, 16), heads=(2, 2), depth=3, pairs=("0-1",), **SMALL)
    params = assemble_pool(pool, random_instances(pool, seed=3), images())
    model, descendant = export_config(pool, params, 6)  # (1,2): 2 + 1 blocks of two different instances
    assert type(model) is ViT and model.depth == 3
    kw = convert.timm_kwargs(model)
    ref = timm.models.vision_transformer.VisionTransformer(**{k: v for k, v in kw.items() if k != "layer_norm_eps"})
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in convert.to_timm(descendant).items()})
    x = np.asarray(images())
    with torch.no_grad():
        got = ref.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, apply_config(pool, params, x, jnp.int32(6)), atol=1e-4)


def test_costs_match_deit_and_the_exported_trees():
    for size, flops, params in (("ti", 1.3, 5_717_416), ("s", 4.6, 22_050_664), ("b", 17.6, 86_567_656)):
        vit = create_model(f"deit_{size}")
        pool = LearngenePool(widths=(vit.width,), heads=(vit.num_heads,), depth=12, pairs=())
        p, f = config_cost(pool, pool.configs()[0])
        assert p == params == count_params(jax.eval_shape(vit.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
        assert round(f / 1e9, 1) == flops  # DeiT's table (fvcore multiply-adds)


# --- training objectives --------------------------------------------------------------------------------------

def _config(objective, **lgpool):
    c = base_config()
    c.objective = objective
    c.distill.update({"type": "soft", "alpha": 0.9, "temperature": 1.0})
    if lgpool:
        import ml_collections

        c.lgpool = ml_collections.ConfigDict(lgpool)
    return c


def _batch(seed=0):
    x = images(4, seed)
    labels = jnp.arange(4) % 10
    return StepInputs(x, jax.nn.one_hot(labels, 10), labels, jax.random.key(seed))


def test_projections_receive_gradients_and_are_not_exported():
    teacher_model = ViT(width=32, depth=6, num_heads=2, **SMALL)
    teacher = Teacher(teacher_model, {"params": random_params(teacher_model, 1)})
    student = create_model("lgpool_student", width=16, num_heads=2, depth=3, teacher_width=32, teacher_depth=6,
                           points=3, num_classes=10, image_size=16, patch_size=4)
    assert isinstance(student, PoolStudent)
    params = random_params(student)
    assert params["projections"]["blocks"]["kernel"].shape == (3, 32, 16)  # teacher width → student width
    objective = make_objective(_config("lgpool_distill"), student, teacher)
    step = jax.jit(jax.value_and_grad(lambda p: objective(p, {}, {"teacher": teacher.variables}, _batch())[::2],
                                      has_aux=True))
    (_, extra), grads = step(params)
    for kind in ("blocks", "attn"):
        for leaf in ("kernel", "bias"):
            per_point = jnp.abs(grads["projections"][kind][leaf]).reshape(3, -1).max(1)
            assert bool(jnp.all(per_point > 0)), (kind, leaf, per_point)
    assert float(jnp.abs(grads["blocks"]["qkv"]["kernel"]).max()) > 0
    assert set(extra) == {"ce", "soft_ce", "feature_mse"}
    plain = instance_of(student)
    kept = {k: v for k, v in params.items() if k != "projections"}
    assert type(plain) is ViT and count_params(kept) == count_params(jax.eval_shape(
        plain.init, jax.random.key(0), images()))


def _numpy_vit(params, x, num_heads, eps=1e-6):
    """A DeiT-layout ViT (class token, final norm, token pooling) in float64 numpy, written from timm's forward
    apart from the port: logits, each block's output and each attention sub-layer's output attn(LN1 x)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    n, size, _, chans = x.shape
    kernel = p["patch_embed"]["kernel"]  # (patch, patch, chans, width)
    patch, width = kernel.shape[0], kernel.shape[-1]
    grid, head_dim = size // patch, width // num_heads
    patches = x.reshape(n, grid, patch, grid, patch, chans).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid**2, -1)
    h = patches @ kernel.reshape(-1, width) + p["patch_embed"]["bias"]
    h = np.concatenate([np.broadcast_to(p["cls_token"], (n, 1, width)), h], 1) + p["pos_embed"]

    def norm(v, q):
        return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps) * q["scale"] + q["bias"]

    def linear(v, q):
        return v @ q["kernel"] + q["bias"]

    erf = np.vectorize(math.erf)
    blocks, attns = [], []
    for i in range(p["blocks"]["qkv"]["kernel"].shape[0]):
        b = jax.tree.map(lambda a, i=i: a[i], p["blocks"])
        qkv = linear(norm(h, b["norm1"]), b["qkv"]).reshape(n, -1, 3, num_heads, head_dim)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(head_dim)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attn = linear((weights @ v).transpose(0, 2, 1, 3).reshape(n, -1, width), b["proj"])
        h = h + attn
        hidden = linear(norm(h, b["norm2"]), b["fc1"])
        h = h + linear(0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), b["fc2"])
        blocks.append(h)
        attns.append(attn)
    return linear(norm(h, p["norm"])[:, 0], p["head"]), blocks, attns


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_stage_one_loss_is_the_official_formula_by_hand():
    # (1 − a)·CE + a·(soft-CE(s/T, t/T) + Σ over matched (student s, teacher t) blocks of MSE(S_s, P·T_t + b) on
    # block outputs and on attention-sublayer outputs), from a float64 numpy ViT; student depth 3, teacher depth 6:
    # the official thirds match student blocks 0, 1, 2 to teacher blocks 1, 3, 5 (never s = t). Float32 vs
    # float64: rtol 1e-4.
    alpha, temperature = 0.7, 2.0
    teacher_model = ViT(width=32, depth=6, num_heads=2, **SMALL)
    teacher_params = random_params(teacher_model, 1)
    student = create_model("lgpool_student", width=16, num_heads=2, depth=3, teacher_width=32, teacher_depth=6,
                           points=3, num_classes=10, image_size=16, patch_size=4)
    params = random_params(student, 2)
    x, labels = images(4, 5), np.array([3, 1, 4, 1])
    targets = 0.7 * np.eye(10)[labels] + 0.3 * np.eye(10)[(labels + 5) % 10]  # mixed targets, as after mixup
    config = _config("lgpool_distill")
    config.distill.update({"alpha": alpha, "temperature": temperature})
    objective = make_objective(config, student, Teacher(teacher_model, {"params": teacher_params}))
    batch = StepInputs(x, jnp.asarray(targets, jnp.float32), jnp.asarray(labels), jax.random.key(0))
    loss, _, metrics = jax.jit(lambda p: objective(p, {}, {"teacher": {"params": teacher_params}}, batch))(params)

    s_logits, s_blocks, s_attns = _numpy_vit(params, x, 2)
    t_logits, t_blocks, t_attns = _numpy_vit(teacher_params, x, 2)
    proj = jax.tree.map(lambda a: np.asarray(a, np.float64), params["projections"])
    ce = np.mean(np.sum(-targets * _log_softmax(s_logits), -1))
    t_probs = np.exp(_log_softmax(t_logits / temperature))
    soft = np.mean(np.sum(-t_probs * _log_softmax(s_logits / temperature), -1))

    def features(teacher_block):
        total = 0.0
        for n, (s, t) in enumerate(((0, 1), (1, 3), (2, 5))):
            t = teacher_block(s, t)
            for kind, s_out, t_out in (("blocks", s_blocks, t_blocks), ("attn", s_attns, t_attns)):
                target = t_out[t] @ proj[kind]["kernel"][n] + proj[kind]["bias"][n]
                total += np.mean((s_out[s] - target) ** 2)
        return total

    feature = features(lambda s, t: t)
    expected = (1 - alpha) * ce + alpha * (soft + feature)
    np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["soft_ce"]), soft, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["feature_mse"]), feature, rtol=1e-4)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    # the test can tell the mistakes apart: teacher block s for t, a swapped weight, or one term off
    assert abs(features(lambda s, t: s) - feature) > 1e-2 * feature
    for wrong in (alpha * ce + (1 - alpha) * (soft + feature), (1 - alpha) * ce + alpha * soft + feature,
                  (1 - alpha) * ce + alpha * (soft + feature / 2)):
        assert abs(wrong - expected) > 1e-3 * expected


def test_projections_need_a_vit_teacher_of_the_declared_size():
    from learngene_jax.errors import ConfigError

    student = create_model("lgpool_student", width=16, num_heads=2, depth=3, teacher_width=48, teacher_depth=6,
                           **{k: v for k, v in SMALL.items() if k not in DEIT_LAYOUT})
    teacher = Teacher(ViT(width=32, depth=6, num_heads=2, **SMALL), {})
    with pytest.raises(ConfigError, match="expect a teacher of width 48 and depth 6, but the teacher has width 32"):
        make_objective(_config("lgpool_distill"), student, teacher)


def _touched(g):
    """Which parts a gradient reaches: (the 0-1 stitch, instance 0's blocks, instance 1's head)."""
    return tuple(float(jnp.abs(x).max()) > 0 for x in (g["stitches"]["0-1"]["kernel"],
                                                         g["instances"]["0"]["blocks"]["fc1"]["kernel"],
                                                         g["instances"]["1"]["head"]["kernel"]))


def test_finetune_samples_one_configuration_per_step(mixed_pool):
    pool, params = mixed_pool
    teacher = Teacher(pool.instance_models()[1], {"params": params["instances"]["1"]})
    frozen, configs = {"teacher": teacher.variables}, pool.configs()
    weights = dict(ce_weight=0.5, kd_weight=0.5, temperature=1.0)
    config_grad = jax.jit(jax.grad(lambda p, i: objectives.finetune_loss(pool, teacher, p, frozen, _batch(0), i,
                                                                         **weights)[0]))
    # every configuration's loss reaches exactly the parts it runs: the stitch iff stitched, instance 0's blocks
    # iff it is the front, instance 1's head iff it is the end
    expected = [(not c.alone, c.front == 0, c.end == 1) for c in configs]
    assert [_touched(config_grad(params, jnp.int32(i))) for i in range(len(configs))] == expected
    # and one objective step is the loss of the one configuration it reports, whichever it samples
    objective = make_objective(_config("lgpool_finetune", kd_weight=0.5, ce_weight=0.5), pool, teacher)
    step = jax.jit(jax.grad(lambda p, seed: objective(p, {}, frozen, _batch(seed))[0]))
    sampled = jax.jit(lambda seed: objective(params, {}, frozen, _batch(seed))[2]["config"])
    for seed in range(4):
        assert _touched(step(params, seed)) == expected[int(sampled(seed))]


def test_finetune_weights_ce_and_kd_as_configured_for_every_configuration(mixed_pool):
    pool, params = mixed_pool
    teacher = Teacher(pool.instance_models()[1], {"params": params["instances"]["1"]})
    frozen, batch = {"teacher": teacher.variables}, _batch(3)
    configs = pool.configs()
    is_teacher = [c.alone and c.front == 1 for c in configs]  # instance 1 alone runs the teacher's own params
    assert sum(is_teacher) == 1
    for ce_weight, kd_weight in ((0.5, 0.5), (1.0, 0.25)):
        weights = dict(ce_weight=ce_weight, kd_weight=kd_weight, temperature=1.0)
        loss_of = jax.jit(lambda i, w=weights: objectives.finetune_loss(pool, teacher, params, frozen, batch, i, **w))
        for config_id, teacher_itself in enumerate(is_teacher):
            loss, metrics = loss_of(jnp.int32(config_id))
            ce, kd = float(metrics["ce"]), float(metrics["kd"])
            np.testing.assert_allclose(float(loss), ce_weight * ce + kd_weight * kd, rtol=1e-6)
            # The teacher's logits and its configuration's come from two XLA programs, so they may differ in the
            # last float32 bits: KL of ~1e-7 logit noise is below 1e-6; every other configuration is ≥ 1e-3 away.
            if teacher_itself:
                assert abs(kd) < 1e-6, config_id
            else:
                assert kd > 1e-3, (config_id, kd)
        # the objective's loss is the named loss of the configuration it reports having sampled
        objective = make_objective(_config("lgpool_finetune", ce_weight=ce_weight, kd_weight=kd_weight), pool,
                                   teacher)
        step = jax.jit(lambda rng, objective=objective: objective(params, {}, frozen, replace(batch, rng=rng)))
        for seed in range(4):
            loss, _, metrics = step(jax.random.key(seed))
            expected, _ = loss_of(metrics["config"])
            np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)


def test_pool_fine_tunes_through_the_trainer_from_a_model_directory(mixed_pool, tmp_path):
    pool, params = mixed_pool
    save_model(tmp_path / "pool", pool, {"params": params})
    c = _config("lgpool_finetune", kd_weight=0.5)
    c.init = str(tmp_path / "pool")
    student = build_student(c, 10)
    assert type(student.model) is LearngenePool and student.model.pairs == ("0-1",)
    variables = jax.jit(student.init)(jax.random.key(0), student.source)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves({"params": params}), strict=True):
        np.testing.assert_array_equal(a, b)


# --- configs and the end-to-end run ---------------------------------------------------------------------------

def _load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("arg,configs", [(None, 18), ("depth=9", 27), ("instances=ti+s+b", 3 + 32)])
def test_deit_config_loads(arg, configs):
    c = _load_config("lgpool_deit", arg)
    lg = c.lgpool
    assert c.task == "lgpool" and c.data.name == "imagenet2012" and c.data.image_size == 224
    pool = LearngenePool(widths=tuple(lg.widths), heads=tuple(lg.heads), depth=lg.depth, pairs=tuple(lg.pairs))
    assert len(pool.configs()) == configs
    assert lg.points[0] == 3 and set(lg.points[1:]) == {1}  # official: tiny '[front,end]', the others '[end]'
    # official stage 2: projection stitch init, 0.5·CE on hard labels + 0.5·KD, lr 5e-4 not scaled by batch
    assert lg.stitch_init == "projections" and (lg.ce_weight, lg.kd_weight) == (0.5, 0.5)
    assert dict(lg.finetune_aug) == {"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0, "repeated_aug": 1}
    assert c.optim.scale_lr is False and lg.finetune_lr == lg.distill_lr == 5e-4


@pytest.mark.parametrize("arg", [None, "depth=9", "instances=ti+s+b"])
def test_deit_stage_one_students_have_no_drop_path_and_stage_two_no_repeated_augmentation(arg):
    # official: `ViT_OutMidMap` rebuilds the students' blocks without drop-path; stage 1 runs on 2 processes with
    # DeiT's RASampler, stage 2 on one GPU with a plain RandomSampler
    c = _load_config("lgpool_deit", arg)
    teacher, distill = create_model("deit_b"), {"type": "soft", "teacher_init": "DEIT_B_DIR"}
    for k in range(len(c.lgpool.widths)):
        cfg = stage_config(c, f"distill_{k}", **lgpool_run.distill_stage(c.lgpool, teacher, distill, k))
        model = build_student(cfg, 1000).model
        assert isinstance(model, PoolStudent) and model.width == c.lgpool.widths[k]
        assert model.drop_path_rate == 0.0 and cfg.aug.repeated_aug == 3
    cfg = stage_config(c, "finetune", **lgpool_run.finetune_stage(c, distill))
    assert cfg.objective == "lgpool_finetune" and cfg.aug.repeated_aug == 1 and cfg.aug.mixup == 0.0


def test_least_squares_batch_is_drawn_through_the_training_pipeline_and_mixed():
    # official: one batch of stitch_init_bs images from the stage-2 train loader, then `mixup_fn`
    c = with_changes(_load_config("lgpool_digits", "smoke=True"), **{"lgpool.ls_batch": 20, "aug.flip": True})
    plain = lgpool_run.stitch_init_images(c, 10)
    assert plain.shape == (20, 16, 16, 3)
    drawn = {m: lgpool_run.stitch_init_images(with_changes(c, **{"lgpool.ls_pipeline": "train", "aug.mixup": m}), 10)
             for m in (0.0, 0.8)}
    assert drawn[0.8].shape == plain.shape and bool(jnp.all(jnp.isfinite(drawn[0.8])))
    assert not np.allclose(drawn[0.0], plain) and not np.allclose(drawn[0.8], drawn[0.0])


def test_smoke_run_through_main(tmp_path):
    workdir = tmp_path / "lgpool"
    proc = run_module("learngene_jax.main", "--config=configs/lgpool_digits.py:smoke=True", f"--workdir={workdir}")
    results = json.loads((workdir / "summary.json").read_text())
    rows = results["rows"]
    assert len(rows) == 2 + 7  # two instances of depth 3 and 3·3 − 2 stitched configs
    assert all(0.0 <= r["top1"] <= 1.0 and r["params"] > 0 and r["flops"] > 0 for r in rows)
    assert set(results["timings_s"]) >= {"teacher", "distill_0_w16", "distill_1_w32", "stitch_init", "finetune",
                                         "stitch_init_least_squares", "finetune_least_squares"}
    # the paper's projection init is the pool kept; the least-squares one is fine-tuned next to it, both reported
    assert results["stitch_init"] == "projections" and set(results["stitch_init_means"]) == {
        "projections", "least_squares"}
    # the two initial pools share the instances and differ in every stitch layer (their smoke accuracies are near
    # chance and may tie: at most an example apart when this was written)
    (_, projected), (_, least_squares) = (load_model(workdir / d) for d in ("pool_init", "pool_init_least_squares"))
    for a, b in zip(jax.tree.leaves(projected["params"]["instances"]),
                    jax.tree.leaves(least_squares["params"]["instances"]), strict=True):
        np.testing.assert_array_equal(a, b)
    kernels = [np.asarray(p["params"]["stitches"]["0-1"]["kernel"]) for p in (projected, least_squares)]
    assert (np.abs(kernels[0] - kernels[1]).max(axis=(1, 2)) > 1e-2).all()
    alone = [r for r in rows if r["stitch_layer"] < 0]  # unstitched instances do not depend on the stitch init
    assert all(r["top1_init"] == r["top1_init_least_squares"] for r in alone)
    assert "top-1 proj. init" in (workdir / "summary.md").read_text() and "fine-tuned from LS init" in proc.stdout
    assert results["frontier"] and rows[results["frontier"][0]]["params"] == min(r["params"] for r in rows)
    assert (workdir / "summary.md").exists() and (workdir / "summary.png").stat().st_size > 0
    assert "| id | configuration |" in proc.stdout
    model, _ = load_model(results["exported"]["0"]["model_dir"])  # config 0 is asked for in the smoke config
    assert type(model) is ViT and model.width == 16
    assert Path(results["exported"]["0"]["timm"]).stat().st_size > 0
    instance, _ = load_model(workdir / "instances" / "1")
    assert type(instance) is ViT and instance.width == 32


@pytest.mark.parametrize("change,message", [("--config.lgpool.ls_batch=0", "lgpool.ls_batch .* must be at least 1"),
                                            ("--config.lgpool.ls_pipeline=bogus", "lgpool.ls_pipeline must be one of")])
def test_bad_least_squares_settings_are_one_line_before_training(tmp_path, change, message):
    proc = run_module("learngene_jax.main", "--config=configs/lgpool_digits.py:smoke=True", f"--workdir={tmp_path}",
                      change, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last) and not (tmp_path / "teacher").exists()
