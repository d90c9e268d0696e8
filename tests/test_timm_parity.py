"""Parity with timm's VisionTransformer (random weights, float32, CPU) and exact round trips."""

from functools import partial

import jax
import numpy as np
import pytest
from conftest import run_module

from learngene_jax import genes
from learngene_jax.convert import state_dict, vit
from learngene_jax.genes.io import save_gene
from learngene_jax.models.io import load_model

pytestmark = pytest.mark.torch

# (class_token, global_pool, fc_norm) — DeiT, learngene descendant, class token + average pooling.
VARIANTS = [(True, "token", None), (False, "avg", None), (True, "avg", None), (False, "avg", False)]
TOL = 1e-5


def timm_vit(timm, class_token, global_pool, fc_norm, seed=0, **kw):
    import torch

    torch.manual_seed(seed)
    kw = dict(img_size=32, patch_size=8, num_classes=10, embed_dim=48, depth=3, num_heads=3, mlp_ratio=4,
              qkv_bias=True, class_token=class_token, global_pool=global_pool, fc_norm=fc_norm,
              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)) | kw
    model = timm.models.vision_transformer.VisionTransformer(**kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def torch_logits(model, x_nhwc):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x_nhwc).transpose(0, 3, 1, 2).copy())).numpy()


@pytest.mark.parametrize("class_token,global_pool,fc_norm", VARIANTS)
def test_from_timm_logits(timm, class_token, global_pool, fc_norm):
    ref = timm_vit(timm, class_token, global_pool, fc_norm)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    model, params = vit.from_timm(sd, num_heads=3)
    assert (model.class_token, model.pool) == (class_token, global_pool)
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    got = np.asarray(model.apply({"params": params}, x))
    np.testing.assert_allclose(got, torch_logits(ref, x), atol=TOL, rtol=0)
    # Flax → timm → Flax is exact
    back = vit.to_timm(params)
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    _, again = vit.from_timm(back, num_heads=3)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_from_timm_cli_model_dir(timm, tmp_path):
    import torch

    ref = timm_vit(timm, True, "token", None)
    torch.save({"model": ref.state_dict(), "epoch": 3}, tmp_path / "deit.pth")
    run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "deit.pth"),
               "--out", str(tmp_path / "model"), "--num-heads", "3")
    model, variables = load_model(tmp_path / "model")
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, x), torch_logits(ref, x), atol=TOL, rtol=0)
    x_nchw = x.transpose(0, 3, 1, 2)
    np.save(tmp_path / "x.npy", x_nchw)
    run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "model"), "--images", str(tmp_path / "x.npy"),
               "--layout-images", "nchw", "--out", str(tmp_path / "y.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), torch_logits(ref, x), atol=TOL, rtol=0)


@pytest.mark.parametrize("method,depth,layout", [("tleg", 5, "official"), ("sws", 4, "exact"), ("tleg", 4, "exact")])
def test_to_timm_strict_load_and_logits(timm, tmp_path, method, depth, layout):
    import torch
    from helpers import tiny_gene

    _, _, gene = tiny_gene(method)
    save_gene(tmp_path / "gene", gene)
    out = tmp_path / "des.safetensors"
    run_module("learngene_jax.convert", "to-timm", "--gene", str(tmp_path / "gene"), "--depth", str(depth),
               "--layout", layout, "--out", str(out))
    sd = {k: torch.from_numpy(v) for k, v in state_dict.read_state_dict(out).items()}
    model = genes.descendant_model(gene, depth, layout=layout)
    kw = vit.timm_kwargs(model)
    eps = kw.pop("layer_norm_eps")
    kw.pop("fc_norm")
    ref = timm.models.vision_transformer.VisionTransformer(
        **kw, fc_norm=model.final_norm == "fc_norm", norm_layer=partial(torch.nn.LayerNorm, eps=eps)).eval()
    ref.load_state_dict(sd, strict=True)
    x = np.random.default_rng(2).standard_normal((3, 32, 32, 3)).astype(np.float32)
    ours = model.apply({"params": genes.expand(gene, depth, layout=layout)}, x)
    np.testing.assert_allclose(ours, torch_logits(ref, x), atol=TOL, rtol=0)


def test_from_timm_reports_every_bad_key(timm):
    ref = timm_vit(timm, True, "token", None)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    sd["extra_token"] = np.zeros((1, 1, 48), np.float32)
    sd["blocks.1.mlp.fc1.weight"] = sd["blocks.1.mlp.fc1.weight"][:5]
    del sd["blocks.2.attn.proj.bias"]
    from learngene_jax.errors import ConversionError

    with pytest.raises(ConversionError) as e:
        vit.from_timm(sd, num_heads=3)
    msg = str(e.value)
    assert "unexpected key extra_token" in msg
    assert "blocks.{layer}.mlp.fc1.weight has different shapes across layers" in msg
    assert "missing key blocks.2.attn.proj.bias" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("prefix,wrapper", [("module.", "model"), ("_orig_mod.", "state_dict"),
                                            ("module._orig_mod.", None)])
def test_wrapped_state_dicts_are_unwrapped_and_said(timm, tmp_path, capsys, prefix, wrapper):
    """DDP ('module.') and torch.compile ('_orig_mod.') prefixes, under 'model'/'state_dict' or bare."""
    import torch

    ref = timm_vit(timm, True, "token", None)
    sd = {prefix + k: v for k, v in ref.state_dict().items()}
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, tmp_path / "w.pth")
    flat = state_dict.read_state_dict(tmp_path / "w.pth")
    assert sorted(flat) == sorted(ref.state_dict())
    assert f"removed the prefix {prefix!r}" in capsys.readouterr().err
    model, params = vit.from_timm(flat, num_heads=3)
    x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.apply({"params": params}, x), torch_logits(ref, x), atol=TOL, rtol=0)


def test_wrapped_checkpoint_through_the_cli(timm, tmp_path):
    import torch

    ref = timm_vit(timm, True, "token", None)
    torch.save({"model": {"module." + k: v for k, v in ref.state_dict().items()}}, tmp_path / "ddp.pth")
    proc = run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "ddp.pth"),
                      "--out", str(tmp_path / "model"), "--num-heads", "3")
    assert "removed the prefix 'module.'" in proc.stderr
    model, variables = load_model(tmp_path / "model")
    x = np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, x), torch_logits(ref, x), atol=TOL, rtol=0)


@pytest.mark.parametrize("layout", ["official", "exact"])
def test_to_timm_then_from_timm_is_exact_with_other_heads_and_eps(tmp_path, layout):
    """from-timm reads the heads, eps and pooling that to-timm stored, so a gene whose heads are not width/64
    and whose eps is not 1e-6 comes back as the same function without flags."""
    from helpers import tiny_gene

    _, _, gene = tiny_gene("tleg", eps=1e-5)
    model = genes.descendant_model(gene, 3, layout=layout)
    assert model.num_heads != max(model.width // 64, 1) or model.eps != 1e-6
    save_gene(tmp_path / "gene", gene)
    run_module("learngene_jax.convert", "to-timm", "--gene", str(tmp_path / "gene"), "--depth", "3",
               "--layout", layout, "--out", str(tmp_path / "des.safetensors"))
    proc = run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "des.safetensors"),
                      "--out", str(tmp_path / "model"))
    assert "read timm_kwargs from the file's metadata" in proc.stdout
    back, variables = load_model(tmp_path / "model")
    assert (back.num_heads, back.eps, back.pool) == (model.num_heads, model.eps, model.pool)
    x = np.random.default_rng(6).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(back.apply(variables, x),
                               model.apply({"params": genes.expand(gene, 3, layout=layout)}, x), atol=1e-6, rtol=0)
    # flags still override what the file says
    run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "des.safetensors"),
               "--out", str(tmp_path / "model1"), "--num-heads", "1", "--eps", "1e-6")
    assert (load_model(tmp_path / "model1")[0].num_heads, load_model(tmp_path / "model1")[0].eps) == (1, 1e-6)


@pytest.mark.parametrize("options,named", [
    ({"reg_tokens": 4}, "register tokens"),
    ({"init_values": 1e-5}, "layer scale"),
    ({"no_embed_class": True}, "a position table without a class-token row"),
    ({"qk_norm": True}, "query/key normalisation"),
])
def test_timm_vit_options_the_flax_vit_lacks_are_named(timm, tmp_path, options, named):
    """Real timm models with other prefix tokens or block options: one line naming the option (not a
    'not a square grid' guess), through the CLI too."""
    import torch

    ref = timm_vit(timm, True, "token", None, depth=2, **options)
    torch.save({"model": ref.state_dict()}, tmp_path / "v.pth")
    proc = run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "v.pth"),
                      "--out", str(tmp_path / "m"), "--num-heads", "3", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr and "square grid" not in proc.stderr and not (tmp_path / "m").exists()


def test_distilled_deit_logits_and_round_trip(timm, tmp_path):
    """timm's VisionTransformerDistilled (class + distillation token, two heads averaged in eval): converted
    through the CLI, logits equal to timm's; Flax → timm keys exact."""
    import torch

    torch.manual_seed(0)
    ref = timm.models.deit.VisionTransformerDistilled(img_size=32, patch_size=8, num_classes=10, embed_dim=48,
                                                      depth=3, num_heads=3).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn_like(p))
    torch.save({"model": ref.state_dict()}, tmp_path / "deit_d.pth")
    run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "deit_d.pth"),
               "--out", str(tmp_path / "model"), "--num-heads", "3")
    model, variables = load_model(tmp_path / "model")
    assert model.distilled and model.class_token and model.pool == "token"
    x = np.random.default_rng(7).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, x), torch_logits(ref, x), atol=TOL, rtol=0)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    back = vit.to_timm(variables["params"])
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    assert vit.timm_kwargs(model)["distilled"] is True


@pytest.mark.parametrize("flags,message", [
    (["--num-heads", "5"], "width 48 is not divisible by 5 heads"),
    (["--num-heads", "0"], "--num-heads must be >= 1, got 0"),
    (["--eps", "-1"], "--eps must be a positive LayerNorm epsilon"),
])
def test_from_timm_bad_heads_or_eps_are_one_line(timm, tmp_path, flags, message):
    import torch

    torch.save(timm_vit(timm, True, "token", None).state_dict(), tmp_path / "v.pth")
    proc = run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(tmp_path / "v.pth"),
                      "--out", str(tmp_path / "m"), *flags, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
