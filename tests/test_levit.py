"""LeViT: parity with timm 1.0.31 (random weights, BN statistics and attention biases; float32, CPU), exact
parameter counts, attention bias indices, the facebookresearch key layout and the converter CLI."""

import itertools
import json

import jax
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert import levit as convert
from learngene_jax.errors import ConversionError
from learngene_jax.models import create_model, model_from_spec, model_spec
from learngene_jax.models.io import abstract_variables, load_model
from learngene_jax.models.levit import VARIANTS, attention_bias_index
from learngene_jax.models.vit import count_params

# Image size per variant in the parity tests: 224 for the teacher and the smallest model, 112 (grids 7, 4, 2:
# odd sides and the ceiling subsample) for the others, to stay fast on two cores.
SIZES = {"levit_128s": 224, "levit_128": 112, "levit_192": 112, "levit_256": 112, "levit_384": 224}
# timm's parameter counts (1000 classes, distilled); levit_384 is the published 39.1 M.
PARAM_COUNTS = {"levit_128s": 7_777_058, "levit_128": 9_213_936, "levit_192": 10_947_069,
                "levit_256": 18_893_876, "levit_384": 39_128_836}
EVAL_TOL = 1e-5
# Train mode normalises with batch statistics, which amplifies rounding with depth: on these weights timm's
# own float32 logits differ from its float64 ones by up to ~1e-5, so float32 allows 1e-4 (absolute).
TRAIN_TOL = 1e-4
STATS_TOL = 1e-4  # running mean/var after one train step (relative to max(1, |value|))
BATCH = 4
NUM_CLASSES = 10
BN_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def randomise_levit(model, seed):
    """Every weight, BN statistic and attention bias random, scaled so that float32 stays well conditioned:
    variance-preserving linears, BN scales in [0.5, 1.5] ([0.1, 0.4] on the residual outputs timm starts at
    0), biases and running means N(0, 0.2), running variances in [0.5, 2], attention biases N(0, 2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("linear.weight"):
                t.normal_(0, t[0].numel() ** -0.5, generator=g)
            elif key.endswith(("attn.proj.ln.bn.weight", "mlp.ln2.bn.weight")):
                t.uniform_(0.1, 0.4, generator=g)
            elif key.endswith("bn.weight"):
                t.uniform_(0.5, 1.5, generator=g)
            elif key.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif key.endswith("attention_biases"):
                t.normal_(0, 2.0, generator=g)
            elif key.endswith(("bias", "running_mean")):
                t.normal_(0, 0.2, generator=g)
    return model.eval()  # after loading: timm caches the attention biases in eval mode


def timm_levit(timm, name, img, seed=0, **kw):
    import torch

    torch.manual_seed(seed)
    return randomise_levit(timm.create_model(name, pretrained=False, img_size=img, num_classes=NUM_CLASSES, **kw),
                           seed + 1)


def state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def images(img, n=BATCH, seed=0):
    return np.random.default_rng(seed).standard_normal((n, img, img, 3)).astype(np.float32)


@pytest.fixture(scope="module", params=list(VARIANTS))
def converted(request, timm):
    """(name, timm model in eval mode, its state dict, Flax model, variables) per variant."""
    name = request.param
    ref = timm_levit(timm, name, SIZES[name])
    sd = state_dict(ref)
    model, variables = convert.from_timm(sd, name)
    return name, ref, sd, model, variables


@pytest.mark.torch
def test_eval_logits_match_timm(converted):
    import torch

    name, ref, _, model, variables = converted
    assert (model.image_size, model.num_classes, model.distilled) == (SIZES[name], NUM_CLASSES, True)
    x = images(model.image_size)
    with torch.no_grad():
        want = ref(nchw(x)).numpy()
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x))
    np.testing.assert_allclose(got, want, atol=EVAL_TOL, rtol=0)
    assert np.abs(want).max() > 0.5  # the logits are not vanishing


@pytest.mark.torch
def test_train_forward_and_batch_stats_match_timm(converted):
    import copy

    import torch

    name, ref, sd, model, variables = converted
    ref = copy.deepcopy(ref).train()
    ref.set_distilled_training(True)  # timm returns (head, head_dist) in train mode only when asked
    rows = {}
    for key, module in ref.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_hook(
                lambda m, i, o, key=key: rows.__setitem__(key, i[0].numel() // i[0].shape[1]))
    x = images(model.image_size, seed=1)
    with torch.no_grad():
        want = [t.numpy() for t in ref(nchw(x))]
    (head, head_dist), updates = jax.jit(lambda v, x: model.clone(distilled_training=True).apply(
        v, x, train=True, mutable=["batch_stats"]))(variables, x)
    np.testing.assert_allclose(np.asarray(head), want[0], atol=TRAIN_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(head_dist), want[1], atol=TRAIN_TOL, rtol=0)
    averaged, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])  # timm's default train mode
    np.testing.assert_allclose(np.asarray(averaged), (want[0] + want[1]) / 2, atol=TRAIN_TOL, rtol=0)

    new = state_dict(ref)
    ours = convert.to_timm(model, {"params": variables["params"], "batch_stats": updates["batch_stats"]})
    for key in (k for k in ours if k.endswith(("running_mean", "running_var"))):
        expected = new[key]
        if key.endswith("running_var"):
            # torch folds in the unbiased batch variance, flax the biased one (factor (n-1)/n, n = B·tokens)
            n = rows[key.removesuffix(".running_var")]
            expected = 0.9 * sd[key] + (new[key] - 0.9 * sd[key]) * (n - 1) / n
        err = np.abs(ours[key] - expected) / np.maximum(1.0, np.abs(expected))
        assert err.max() < STATS_TOL, (key, err.max())
    assert not np.allclose(ours["head.bn.running_mean"], sd["head.bn.running_mean"])  # it did update


@pytest.mark.torch
def test_param_counts_equal_timm(timm, converted):
    name = converted[0]
    assert sum(p.numel() for p in timm.create_model(name).parameters()) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_counts(name):
    model = create_model(name)
    assert (model.image_size, model.num_classes, model.distilled) == (224, 1000, True)
    assert count_params(abstract_variables(model)["params"]) == PARAM_COUNTS[name]


@pytest.mark.torch
def test_attention_bias_index_equals_timm(timm, converted):
    from timm.models.levit import Attention, AttentionDownsample

    # every resolution and stride the converted model uses, read off the timm modules themselves
    name, ref, _, model, _ = converted
    holders = {k: m for k, m in ref.named_modules() if hasattr(m, "attention_bias_idxs")}
    biases = [u for u in convert.units(model) if u.kind == "biases"]
    assert sorted(u.timm for u in biases) == sorted(holders)
    for unit in biases:
        module = holders[unit.timm]
        assert (unit.resolution, unit.stride) == (module.resolution[0], getattr(module, "stride", 1))
        np.testing.assert_array_equal(attention_bias_index(unit.resolution, unit.stride),
                                      module.attention_bias_idxs.numpy())
    if name != "levit_384":
        return
    # and every grid side a LeViT at 16..320 pixels can have
    for res in range(1, 21):
        np.testing.assert_array_equal(attention_bias_index(res),
                                      Attention(16, 4, 2, resolution=res).attention_bias_idxs.numpy())
        np.testing.assert_array_equal(attention_bias_index(res, 2), AttentionDownsample(
            16, 16, 4, 2, resolution=res, stride=2).attention_bias_idxs.numpy())


def fb_keys(depths, distilled=True):
    """The state-dict keys of facebookresearch/LeViT's `LeViT` (written from its model definition: `b16` stem,
    one flat `blocks` Sequential of Residual(Attention), Residual(MLP), AttentionSubsample, ...)."""
    keys = []

    def conv_bn(prefix):  # Conv2d_BN / Linear_BN: `c` and `bn`
        keys.extend([f"{prefix}.c.weight"] + [f"{prefix}.bn.{n}" for n in BN_NAMES])

    def biases(prefix):
        keys.extend([f"{prefix}.attention_biases", f"{prefix}.attention_bias_idxs"])

    for i in (0, 2, 4, 6):
        conv_bn(f"patch_embed.{i}")
    i = 0
    for stage, depth in enumerate(depths):
        for _ in range(depth):
            conv_bn(f"blocks.{i}.m.qkv")
            conv_bn(f"blocks.{i}.m.proj.1")
            biases(f"blocks.{i}.m")
            conv_bn(f"blocks.{i + 1}.m.0")
            conv_bn(f"blocks.{i + 1}.m.2")
            i += 2
        if stage < len(depths) - 1:
            conv_bn(f"blocks.{i}.kv")
            conv_bn(f"blocks.{i}.q.1")
            conv_bn(f"blocks.{i}.proj.1")
            biases(f"blocks.{i}")
            conv_bn(f"blocks.{i + 1}.m.0")
            conv_bn(f"blocks.{i + 1}.m.2")
            i += 2
    for head in ("head", "head_dist")[:1 + distilled]:
        keys.extend([f"{head}.bn.{n}" for n in BN_NAMES] + [f"{head}.l.weight", f"{head}.l.bias"])
    return keys


def fb_bias_index(resolution, stride):
    """The original code's index: offsets numbered in order of first appearance (queries on the stride grid)."""
    offsets, idxs = {}, []
    queries = list(itertools.product(range(0, resolution, stride), repeat=2))
    for q in queries:
        for k in itertools.product(range(resolution), repeat=2):
            offset = (abs(q[0] - k[0]), abs(q[1] - k[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return np.array(idxs).reshape(len(queries), resolution**2)


def random_levit(name, img, seed=0, **kw):
    """A Flax LeViT with every variable random (running variances positive)."""
    kw = {"num_classes": NUM_CLASSES, **kw}
    model = create_model(name, image_size=img, **kw)
    rng = np.random.default_rng(seed)
    variables = jax.tree_util.tree_map(lambda s: 0.1 * rng.standard_normal(s.shape).astype(np.float32),
                                       abstract_variables(model))
    variables["batch_stats"] = jax.tree_util.tree_map(lambda v: np.abs(v) + 0.5, variables["batch_stats"])
    return model, variables


def to_fb_layout(model, variables):
    """The original checkpoint of a model: timm keys renamed back, with batch counters and index buffers."""
    back = {timm: fb for fb, timm in convert.fb_renames(model).items()}
    sd = {back[k]: v for k, v in convert.to_timm(model, variables).items()}
    for unit in convert.units(model):
        if unit.kind == "biases":
            sd[f"{unit.fb}.attention_bias_idxs"] = fb_bias_index(unit.resolution, unit.stride)
        else:
            sd[f"{unit.fb}.bn.num_batches_tracked"] = np.array(7)
    return sd


@pytest.mark.parametrize("name,img,distilled", [("levit_384", 224, True), ("levit_128s", 64, False)])
def test_facebookresearch_layout_converts_identically(name, img, distilled):
    model, variables = random_levit(name, img, distilled=distilled)
    fb = to_fb_layout(model, variables)
    assert sorted(fb) == sorted(fb_keys(VARIANTS[name]["depths"], distilled))
    if name == "levit_384":
        assert "blocks.27.m.2.bn.running_var" in fb and "blocks.28.m.0.c.weight" not in fb  # flat blocks 0–27
    assert convert.is_fb_layout(fb)
    got_model, got = convert.from_timm(fb, name)
    assert got_model == model
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(variables)
    # a wrong index buffer (another offset order) is refused rather than scrambling the biases
    key = "blocks.0.m.attention_bias_idxs"
    fb[key] = fb[key][::-1].copy()
    with pytest.raises(ConversionError, match="attention bias index buffers differ"):
        convert.from_timm(fb, name)


def test_bad_keys_are_reported_together():
    model, variables = random_levit("levit_128s", 64)
    sd = convert.to_timm(model, variables)
    del sd["stages.1.downsample.attn_downsample.q.ln.bn.running_var"]
    del sd["head_dist.linear.bias"]
    sd["stages.0.blocks.0.attn.qkv.linear.weight"] = sd["stages.0.blocks.0.attn.qkv.linear.weight"][:, :5]
    sd["dist_token"] = np.zeros((1, 1, 128), np.float32)
    with pytest.raises(ConversionError) as e:
        convert.from_timm(sd, "levit_128s")
    msg = str(e.value)
    assert "\n" not in msg and "4 problems (2 missing, 1 unexpected, 1 shape)" in msg
    assert "unexpected key dist_token" in msg
    assert "missing key stages.1.downsample.attn_downsample.q.ln.bn.running_var" in msg
    assert "missing key head_dist.linear.bias" in msg
    assert "stages.0.blocks.0.attn.qkv.linear.weight gives shape (5, 256)" in msg
    with pytest.raises(ConversionError, match="these are levit_128s weights, not levit_128: pass --arch levit_128s"):
        convert.from_timm(convert.to_timm(model, variables), "levit_128")


def test_registry_round_trip_and_checks():
    model = create_model("levit_256", image_size=112, num_classes=7)
    assert model_from_spec(model_spec(model)) == model
    assert model_spec(model)["model"] == "levit"
    with pytest.raises(ValueError, match="multiple of 16"):
        abstract_variables(create_model("levit_128s", image_size=200))
    model, variables = random_levit("levit_128s", 64)
    x = images(64, n=2)
    with pytest.raises(ValueError, match="mutable=\\['batch_stats'\\]"):
        model.apply(variables, x, train=True)
    assert jax.jit(model.apply)(variables, x).shape == (2, NUM_CLASSES)
    headless, variables = random_levit("levit_128s", 64, num_classes=0)
    assert "head" not in variables["params"] and jax.jit(headless.apply)(variables, x).shape == (2, 384)


@pytest.mark.torch
def test_cli_from_timm_and_predict(timm, tmp_path):
    import torch
    from safetensors.numpy import save_file

    ref = timm_levit(timm, "levit_384", 64, seed=3)
    torch.save({"model": ref.state_dict(), "epoch": 3}, tmp_path / "levit.pth")
    run_module("learngene_jax.convert", "from-timm", "--arch", "levit_384", "--checkpoint", str(tmp_path / "levit.pth"),
               "--out", str(tmp_path / "model"))
    model, variables = load_model(tmp_path / "model")
    assert (model.image_size, model.num_classes, model.distilled) == (64, NUM_CLASSES, True)
    assert set(variables) == {"params", "batch_stats"}
    x = images(64, n=3, seed=2)
    np.save(tmp_path / "x.npy", x.transpose(0, 3, 1, 2))
    run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "model"), "--images", str(tmp_path / "x.npy"),
               "--layout-images", "nchw", "--out", str(tmp_path / "y.npy"))
    with torch.no_grad():
        want = ref(nchw(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=EVAL_TOL, rtol=0)

    # the original layout, as .safetensors, is detected and gives the same model directory
    save_file({k: np.ascontiguousarray(v) for k, v in to_fb_layout(model, variables).items()},
              str(tmp_path / "fb.safetensors"))
    out = run_module("learngene_jax.convert", "from-timm", "--arch", "levit_384", "--checkpoint",
                     str(tmp_path / "fb.safetensors"), "--out", str(tmp_path / "fb_model")).stdout
    assert "facebookresearch layout" in out
    fb_model, fb_variables = load_model(tmp_path / "fb_model")
    assert fb_model == model
    for a, b in zip(jax.tree_util.tree_leaves(fb_variables), jax.tree_util.tree_leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)

    bad = run_module("learngene_jax.convert", "from-timm", "--arch", "levit_256", "--checkpoint",
                     str(tmp_path / "levit.pth"), "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: these are levit_384 weights, not levit_256: pass --arch levit_384"


@pytest.mark.torch
@pytest.mark.slow
def test_distillation_with_a_converted_levit_teacher_through_main(tmp_path, timm):
    """A (small, random) timm LeViT → converted teacher directory → TLEG aux distilled from it by `main`."""
    import torch

    torch.manual_seed(0)
    ref = timm.create_model("levit_128s", img_size=64, num_classes=10).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "levit.pth")
    run_module("learngene_jax.convert", "from-timm", "--arch", "levit_128s", "--checkpoint",
               str(tmp_path / "levit.pth"), "--out", str(tmp_path / "teacher"))
    run_module("learngene_jax.main", "--config=configs/digits_vit.py:depth=2,epochs=1", f"--workdir={tmp_path / 'aux'}",
               "--config.model.name=tleg_aux", "--config.model.width=32", "--config.model.num_heads=2",
               "--config.model.patch_size=16", "--config.data.image_size=64", "--config.max_steps=3",
               "--config.distill.type=soft", "--config.distill.alpha=1.0", "--config.distill.teacher=levit_128s",
               f"--config.distill.teacher_init={tmp_path / 'teacher'}", "--config.batch_size=16")
    final = json.loads((tmp_path / "aux" / "final.json").read_text())
    assert final["steps"] == 3 and final["gene_params"] > 0 and np.isfinite(final["loss"])
    rows = [json.loads(line) for line in (tmp_path / "aux" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows)
