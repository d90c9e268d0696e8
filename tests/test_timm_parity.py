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
    sd["dist_token"] = np.zeros((1, 1, 48), np.float32)
    sd["blocks.1.mlp.fc1.weight"] = sd["blocks.1.mlp.fc1.weight"][:5]
    del sd["blocks.2.attn.proj.bias"]
    from learngene_jax.errors import ConversionError

    with pytest.raises(ConversionError) as e:
        vit.from_timm(sd, num_heads=3)
    msg = str(e.value)
    assert "unexpected key dist_token" in msg
    assert "blocks.{layer}.mlp.fc1.weight has different shapes across layers" in msg
    assert "missing key blocks.2.attn.proj.bias" in msg
    assert "\n" not in msg
