"""As-ViT: genotypes, the network against the official code, the proxies, search and grow end to end."""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, REPO
from flax.traverse_util import flatten_dict, unflatten_dict

from learngene_jax.config_lib import load_config
from learngene_jax.errors import ConfigError
from learngene_jax.methods.asvit import genotype as gt
from learngene_jax.methods.asvit import grow, proxies, search
from learngene_jax.methods.asvit.model import from_genotype, mac_count, merge_padding, param_count, unfold
from learngene_jax.models import create_model, model_from_spec, model_spec
from learngene_jax.models.vit import count_params

REF = DATA / "official" / "asvit_ref.npz"

# Numbers from running the official `Transformer` (VITA-Group/AsViT e326cca) on CPU: trainable params and its
# `thop_modified.profile` count with `count_matmul`, at 224² and 1000 classes.
OFFICIAL_COUNTS = {
    gt.SEED: (2_319_624, 491_595_264),
    gt.LARGE: (87_580_820, 22_358_480_640),
    "5,8,6|3,4,5|2,2,2|3,1,3|64": (1_541_320, 215_878_144),
    "7,4,2,2|2,2,3,1|3,1,5,3|4,1,4,2|16,9": (309_784, 62_987_840),
}


# ---------------------------------------------------------------------------------------------- genotypes

def test_parse_seed_and_large():
    seed, large = gt.parse_genotype(gt.SEED), gt.parse_genotype(gt.LARGE)
    assert (seed.kernels, seed.splits, seed.expansions, seed.heads) == ((8, 4, 4, 4), (2, 1, 1, 1), (3, 2, 4, 6), 32)
    assert (seed.depths, seed.width) == ((1, 1, 1, 1), 32)
    assert (large.depths, large.width) == ((5, 2, 5, 2), 180)
    assert large.stage_heads == (4, 8, 16, 32) and large.stage_widths == (180, 360, 720, 1024)


@pytest.mark.parametrize("text", [gt.SEED, gt.LARGE, "8,2,3|4,1,2|4,1,4|4,1,6|32,180",
                                  "4,8,2,3|2,4,6,1|3,2,5,1|2,1,2,7|64"])
def test_genotype_round_trip(text):
    g = gt.parse_genotype(text)
    assert gt.format_genotype(g) == text
    assert gt.parse_genotype(gt.format_genotype(g, full=True)) == g
    assert str(g) == text


def test_search_space_size():
    assert gt.space_size() == 4_556_250
    assert math.prod(len(c) for _, c in gt.SEARCH_SPACE) == 4_556_250
    assert len(gt.SEARCH_SPACE) == 13
    # index 4 of K1 is 8, index 0 of S1 is 2, ...: the seed is reachable from choices
    seed = gt.from_choices([4, 0, 1, 2, 0, 0, 2, 0, 2, 2, 0, 4, 1])
    assert gt.format_genotype(seed) == gt.SEED


@pytest.mark.parametrize("text, message", [
    ("8,2,3|4,1,2|4,1,4|32", "has 3 stages"),
    ("8,2,3|4,1,2|4,1,4|4,1,6|4,1,6|32", "has 5 stages"),
    ("8,2,x|4,1,2|4,1,4|4,1,6|32", "E1 must be an integer, got 'x'"),
    ("8,2|4,1,2|4,1,4|4,1,6|32", "stage 1 '8,2' must be"),
    ("8,2,3,1|4,1,2|4,1,4|4,1,6|32", "in every stage or in none"),
    ("9,2,3|4,1,2|4,1,4|4,1,6|32", "K1=9 is outside"),
    ("8,2,3|4,1,2|4,4,4|4,1,6|32", "S3=4 is outside"),
    ("8,2,3|4,1,2|4,1,4|4,2,6|32", "S4=2 is outside"),
    ("8,2,3|4,1,2|4,1,4|4,1,7|32", "E4=7 is outside"),
    ("8,2,3|4,1,2|4,1,4|4,1,6|48", "h=48 is outside"),
    ("8,2,3|4,1,2|4,1,4|4,1,6|32,1,2", "head part"),
    ("8,2,3,0|4,1,2,1|4,1,4,1|4,1,6,1|32", "at least 1 layer"),
    ("8,2,3|4,1,2|4,1,4|4,1,6|64,4", "fewer channels than its 8 heads"),
])
def test_malformed_genotypes_fail_in_one_line(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        gt.parse_genotype(text)
    assert "\n" not in str(e.value)


def test_resolution_errors():
    seed = gt.parse_genotype(gt.SEED)
    assert gt.check_resolution(seed, 224) == (56, 28, 14, 7)
    with pytest.raises(ConfigError, match="S1=2 do not divide the 9x9 token grid"):
        gt.check_resolution(seed, 36)
    with pytest.raises(ConfigError, match="odd 5x5 token grid"):
        gt.check_resolution(seed, 40)
    with pytest.raises(ConfigError, match="multiple of 4"):
        gt.check_resolution(seed, 30)
    with pytest.raises(ConfigError, match="do not divide"):
        from_genotype(seed, image_size=36).init(jax.random.key(0), jnp.zeros((1, 36, 36, 3)))


# ---------------------------------------------------------------------------------------------- network

def param_shapes(model):
    """The model's params as shapes (nothing computed)."""
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)["params"]


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
def test_unfold_matches_conv_general_dilated_patches(kernel):
    x = jax.random.normal(jax.random.key(kernel), (2, 8, 8, 5))
    lo, hi = merge_padding(kernel)
    x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    ours = unfold(x, kernel)
    ref = jax.lax.conv_general_dilated_patches(x, (kernel, kernel), (2, 2), "VALID",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                               precision=jax.lax.Precision.HIGHEST)
    assert ours.shape == ref.shape == (2, 4, 4, 5 * kernel * kernel)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("text", list(OFFICIAL_COUNTS))
def test_counts_match_official(text):
    model = create_model("asvit", genotype=text)
    params, macs = OFFICIAL_COUNTS[text]
    assert count_params(param_shapes(model)) == param_count(model) == params
    assert mac_count(model) == macs


def test_counts_without_norms_and_spec_round_trip():
    model = create_model("asvit", genotype=gt.LARGE, image_size=64, num_classes=10)
    bare = model.clone(use_norm=False)
    shapes = param_shapes(bare)
    assert count_params(shapes) == param_count(bare) < param_count(model)
    assert not any("scale" in path for path in flatten_dict(shapes))
    assert model_from_spec(json.loads(json.dumps(model_spec(model)))) == model
    assert model.genotype == gt.parse_genotype(gt.LARGE)


_OFFICIAL_NAMES = [  # official state-dict name → (flax path, transpose kernel)
    (r"patch_embed\.proj\.weight", "patch_embed/kernel"), (r"patch_embed\.proj\.bias", "patch_embed/bias"),
    (r"patch_embed\.norm\.weight", "patch_norm/scale"), (r"patch_embed\.norm\.bias", "patch_norm/bias"),
    (r"layers\.(\d)\.blocks\.(\d+)\.norm1\.(weight|bias)", r"stage\1_block\2/norm1/\3"),
    (r"layers\.(\d)\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"stage\1_block\2/\3/\4"),
    (r"layers\.(\d)\.blocks\.(\d+)\.mlps\.0\.0\.(weight|bias)", r"stage\1_block\2/norm2/\3"),
    (r"layers\.(\d)\.blocks\.(\d+)\.mlps\.0\.1\.(fc1|fc2)\.(weight|bias)", r"stage\1_block\2/\3/\4"),
    (r"layers\.(\d)\.downsample\.norm\.(weight|bias)", r"stage\1_merge/merge_norm/\2"),
    (r"layers\.(\d)\.downsample\.reduction\.weight", r"stage\1_merge/reduction/weight"),
    (r"norm\.(weight|bias)", r"norm/\1"), (r"head\.0\.(weight|bias)", r"head_fc1/\1"),
    (r"head\.2\.(weight|bias)", r"head_fc2/\1"),
]


def official_params(arrays: dict[str, np.ndarray]) -> dict:
    """Flax params from an official state dict (torch Linear (out, in) → kernel (in, out); conv OIHW → HWIO)."""
    flat = {}
    for name, value in arrays.items():
        path = next(re.sub(p, t, name) for p, t in _OFFICIAL_NAMES if re.fullmatch(p, name))
        *mod, leaf = path.split("/")
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2:
            value = value.T
        norm = mod[-1] in ("patch_norm", "norm1", "norm2", "merge_norm", "norm")
        leaf = {"weight": "scale" if norm else "kernel"}.get(leaf, leaf)
        flat[(*mod, leaf)] = jnp.asarray(value)
    return unflatten_dict(flat)


def _ref(prefix: str) -> tuple[dict, dict]:
    ref = np.load(REF)
    sd = {k.split("/", 2)[2]: ref[k] for k in ref.files if k.startswith(f"{prefix}/sd")}
    return {k[len(prefix) + 1:]: ref[k] for k in ref.files if k.startswith(prefix + "/")}, sd


def test_logits_match_official():
    ref, sd = _ref("model")
    model = from_genotype(str(ref["arch"]), image_size=int(ref["image_size"]), num_classes=10)
    params = official_params(sd)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(param_shapes(model))
    apply = jax.jit(model.apply, static_argnames="features")
    logits = apply({"params": params}, ref["images"])
    features = apply({"params": params}, ref["images"], features=True)
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(features, ref["features"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- proxies

@pytest.fixture(scope="module")
def proxy_ref():
    """The official TEG run: a small As-ViT, two inits of its weights, 8 images, two unit circles, κ and LD."""
    ref, _ = _ref("proxy")
    model = from_genotype(str(ref["arch"]), image_size=int(ref["image_size"]), num_classes=0)
    params = [official_params({k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith(f"sd{i}/")})
              for i in range(2)]
    circles = [proxies.circle_points(jnp.asarray(ref[f"u{i}"]), jnp.asarray(ref[f"v{i}"]), 10) for i in range(2)]
    return model, params, jnp.asarray(ref["images"]), circles, ref


def test_unit_circle_is_orthonormal():
    curve, tangent = proxies.unit_circle(jax.random.key(2), 10, (8, 8, 3))
    flat_c, flat_t = curve.reshape(10, -1), tangent.reshape(10, -1)
    np.testing.assert_allclose(jnp.linalg.norm(flat_c, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(flat_t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose((flat_c * flat_t).sum(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(curve[0], curve[-1], atol=1e-5)  # θ = 0 and 2π


def test_length_distortion_jvp_equals_reverse_mode_per_output(proxy_ref):
    model, params, _, circles, _ = proxy_ref
    bare, bare_params = model.clone(use_norm=False), proxies.strip_norms(params[0])
    curve, tangent = circles[0]
    ours = proxies.length_distortion(bare, bare_params, curve, tangent)
    # The official definition: one backward pass per output coordinate z_c to the angles θ (jacrev runs exactly
    # those vjps), then Σ_k ‖dz/dθ_k‖₂. Point k's features depend on θ_k only (off-diagonal blocks are 0).
    u, v = curve[0], tangent[0]  # x(θ) = u cos θ + v sin θ
    theta = jnp.linspace(0.0, 2.0 * jnp.pi, 10)
    points = lambda th: u * jnp.cos(th)[:, None, None, None] + v * jnp.sin(th)[:, None, None, None]
    jac = jax.jit(jax.jacrev(lambda th: bare.apply({"params": bare_params}, points(th), features=True)))(theta)
    jac = np.asarray(jac, np.float64)  # (points, features, points)
    diagonal = jac[np.arange(10), :, np.arange(10)]  # (points, features)
    assert np.abs(jac).sum() == pytest.approx(np.abs(diagonal).sum(), rel=1e-6)
    reference = np.sqrt((diagonal**2).sum(1)).sum()
    assert float(ours) > 0
    np.testing.assert_allclose(float(ours), reference, rtol=1e-5)


def test_ntk_gram_equals_per_sample_gradient_loop(proxy_ref):
    model, params, images, *_ = proxy_ref
    gram = proxies.ntk_gram(model, params[0], images)
    flat = flatten_dict(params[0])
    names = [k for k in flat if k[-1] in ("kernel", "scale")]
    assert any(k[-1] == "scale" for k in names) and not any(k[-1] == "bias" for k in names)

    def total(weights, image):
        tree = unflatten_dict({**flat, **dict(zip(names, weights, strict=True))})
        return model.apply({"params": tree}, image[None], features=True).sum()

    grad = jax.jit(jax.grad(total))
    rows = [np.concatenate([np.ravel(g) for g in grad([flat[k] for k in names], x)]) for x in images]
    jac = np.stack(rows).astype(np.float64)
    expected = jac @ jac.T
    np.testing.assert_allclose(np.asarray(gram), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_proxies_reproduce_official_teg(proxy_ref):
    """Official TEG on CPU (per-output backward loop, per-sample NTK), 2 inits: the same weights and curves."""
    model, params, images, circles, ref = proxy_ref
    bare = model.clone(use_norm=False)
    lengths = [float(proxies.length_distortion(bare, proxies.strip_norms(p), *c))
               for p, c in zip(params, circles, strict=True)]
    kappas = [proxies.condition_number(proxies.ntk_gram(model, p, images)) for p in params]
    np.testing.assert_allclose(np.mean(lengths), ref["length"], rtol=1e-5)
    np.testing.assert_allclose(np.mean(kappas), ref["ntk"], rtol=1e-4)


def test_condition_number_marks_bad_grams():
    assert proxies.condition_number(np.diag([4.0, 2.0, 1.0])) == pytest.approx(4.0)
    assert proxies.condition_number(np.full((2, 2), np.nan)) == math.inf
    assert proxies.condition_number(np.ones((2, 2))) == math.inf  # singular


# ---------------------------------------------------------------------------------------------- search, grow

def _scores(ntk, length):
    return proxies.ProxyScores(ntk=ntk, length=length, ntk_per_init=(ntk,), length_per_init=(length,))


def test_reward_buffer_scores_a_bad_kappa_as_the_worst_seen():
    """TEG's reward, with one deliberate difference (README, Deliberate deviations): a bad κ counts as the worst κ
    seen, as the official `_update_bad_cases` intends; the official code overwrites its `bad` flag in the
    length-distortion step, so there a NaN κ scores −1, the best value."""
    buffer = search.RewardBuffer(size=3)
    assert buffer.push(_scores(10.0, 1.0)) == 0.0  # the official dummy reward of the first step
    # κ 10 → 20 (range 10), LD 1 → 3 (range 2): −1 + 1
    assert buffer.push(_scores(20.0, 3.0)) == pytest.approx(-10 / (10 + 1e-6) + 2 / (2 + 1e-6))
    # a bad κ counts as the worst seen (20): no κ change; LD 3 → 2 over the window [1, 3, 2]
    assert buffer.push(_scores(math.inf, 2.0)) == pytest.approx(0.0 - 1 / (2 + 1e-6))
    # a later, worse κ raises the bad entry too (as `_update_bad_cases` intends): no κ change
    assert buffer.push(_scores(30.0, 2.0)) == pytest.approx(0.0)


def test_baseline_is_bias_corrected_ema():
    baseline = search.Baseline(0.9)
    baseline.update(2.0)
    assert baseline.value == pytest.approx(2.0)
    baseline.update(0.0)
    assert baseline.value == pytest.approx(0.9 * 0.1 * 2.0 / (0.9 * 0.1 + 0.1))


def test_grow_candidates_and_choice():
    # round(8·1.05)=8, round(8.8)=9, round(9.2)=9 (skipped), round(9.6)=10: the official widths
    candidates = grow.grow_candidates((1, 1, 1, 1), 8, (0.05, 0.1, 0.15, 0.2))
    assert [w for _, w in candidates[:3]] == [8, 9, 10] and len(candidates) == 12
    assert candidates[3] == ((1, 2, 1, 1), 8)
    assert grow.dense_ranks([3.0, 1.0, 3.0, 2.0], descending=False) == [2, 0, 2, 1]
    # ranks: κ [0, 1, 2], LD [2, 0, 1] → sums [2, 1, 3]
    assert grow.choose([_scores(1.0, 0.1), _scores(2.0, 0.3), _scores(3.0, 0.2)]) == 1
    # tied rank sums (1, 1) and equal relative ranges (.5, .5): κ decides
    assert grow.choose([_scores(1.0, 0.1), _scores(2.0, 0.2)]) == 0
    assert grow.choose([_scores(1.0, 0.1), _scores(1.1, 0.3)]) == 1  # LD varies more: higher LD wins
    assert grow.choose([_scores(math.inf, 0.5), _scores(5.0, 0.4)]) == 1  # a bad κ is never chosen
    assert grow.choose([_scores(math.inf, 0.5), _scores(math.inf, 0.4)]) == 0  # unless all are bad


def _config(name, arg):
    return load_config(REPO / "configs" / f"{name}.py", arg)


def test_configs_reject_unknown_variants():
    with pytest.raises(ConfigError, match="config argument 'huge' is not one of"):
        _config("asvit_search", "huge")
    with pytest.raises(ConfigError, match="config argument 'tiny' is not one of"):  # the old bare variant
        _config("asvit_grow", "tiny")
    assert _config("asvit_grow", None).arch == gt.SEED


def test_search_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(proxies, "MAX_COMPILED", 2)  # also run the cache clearing that long searches need
    result = search.run(_config("asvit_search", "smoke=True"), str(tmp_path))
    steps = [json.loads(line) for line in (tmp_path / search.STEPS_FILE).read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1, 2] and steps[0]["reward"] == 0.0
    for s in steps:
        assert gt.parse_genotype(s["genotype"]) and s["ntk"] > 0 and s["length_distortion"] > 0
    saved = json.loads((tmp_path / search.RESULT_FILE).read_text())
    assert saved["genotype"] == result["genotype"] and saved["steps"] == 3
    assert result["genotype"] == gt.format_genotype(gt.from_choices(
        [int(np.argmax(p)) for p in result["probabilities"]]))


def test_grow_runs_end_to_end(tmp_path):
    result = grow.run(_config("asvit_grow", "smoke=True"), str(tmp_path))
    (line,) = (tmp_path / grow.STEPS_FILE).read_text().splitlines()
    step = json.loads(line)
    assert len(step["candidates"]) == 4 and step["dropped"] == []
    chosen = gt.parse_genotype(step["genotype"])
    assert sum(chosen.depths) == 5 and chosen.width == 40  # one more layer; width round(8·1.2)·4
    assert step["genotype"] in [c["genotype"] for c in step["candidates"]]
    assert result["stopped"] == "max_steps" and result["final"] == step["genotype"]


# -------------------------------------------------------------------------------- progressive re-tokenization

def test_asvit_retokenization_keeps_params_and_shrinks_the_grid():
    model = from_genotype("8,2,2|2,1,2|2,1,2|2,1,2|16,16", image_size=64, num_classes=10)  # seed's K1 = 8, narrow
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    params = model.init(jax.random.key(1), x)["params"]
    shapes = jax.tree.map(jnp.shape, params)
    grids = {}
    for stride, dilation in ((16, 5), (8, 2), (4, 1)):  # the paper's three phases
        phase = model.clone(patch_stride=stride, patch_dilation=dilation)
        assert jax.tree.map(jnp.shape, phase.init(jax.random.key(1), x)["params"]) == shapes
        logits, state = phase.apply({"params": params}, x, capture_intermediates=True)
        assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
        grids[stride] = [state["intermediates"][name]["__call__"][0].shape[1]
                         for name in ("patch_embed", "stage0_merge", "stage1_merge", "stage2_merge")]
    # 64/stride tokens a side, then halved rounding up (odd grids are padded before merging)
    assert grids == {16: [4, 2, 1, 1], 8: [8, 4, 2, 1], 4: [16, 8, 4, 2]}
    np.testing.assert_allclose(model.apply({"params": params}, x),
                               model.clone(patch_stride=4).apply({"params": params}, x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="stride 24 does not divide image size 64"):
        model.clone(patch_stride=24).apply({"params": params}, x)


def test_window_padding_masks_padded_tokens():
    """A 3x3 grid in 2x2 windows: each window attends over its real tokens only, as if cut out on its own."""
    from learngene_jax.methods.asvit.model import WindowBlock

    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 16))
    block = WindowBlock(num_heads=2, splits=2, expansion=2)
    params = block.init(jax.random.key(1), x)
    out = block.apply(params, x)
    whole = WindowBlock(num_heads=2, splits=1, expansion=2)
    for part in (slice(0, 2), slice(2, 3)):  # the full top-left window and the one-token bottom-right window
        np.testing.assert_allclose(out[:, part, part], whole.apply(params, x[:, part, part]), rtol=1e-5, atol=1e-6)
    # more splits than tokens a side (a stride-16 phase on a small image): every token is its own window, and
    # the gradients stay finite
    tiny = x[:, :2, :2]
    many = WindowBlock(num_heads=2, splits=8, expansion=2)
    singles = [whole.apply(params, tiny[:, i:i + 1, j:j + 1]) for i in range(2) for j in range(2)]
    want = jnp.concatenate(singles, axis=1).reshape(2, 4, 16)
    np.testing.assert_allclose(many.apply(params, tiny).reshape(2, 4, 16), want, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: many.apply(p, tiny).sum())(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_asvit_trains_with_a_retokenization_schedule(tmp_path):
    from helpers import tiny_train_config

    from learngene_jax.train import train

    cfg = tiny_train_config(**{"epochs": 2, "max_steps": 8, "retokenize": ((0, 8, 2), (1, 4, 1)),
                               "data.image_size": 32,
                               "model": {"name": "asvit", "genotype": "4,2,2|2,1,2|2,1,2|2,1,2|16,8"}})
    out = train(cfg, tmp_path / "asvit")
    assert out["steps"] == 8 and np.isfinite(out["loss"])


def test_flops_out_that_is_a_file_is_one_line(tmp_path):
    from learngene_jax.errors import UserError
    from learngene_jax.methods.asvit import flops

    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match=re.escape(f"--out {tmp_path / 'f'}: a file is in the way")):
        flops.main(["--genotype", "seed", "--out", str(tmp_path / "f")])
