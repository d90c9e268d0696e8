"""Gene expansion invariants: the TLEG line, SWS stage copies, exact descendants, gradients to the gene."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, images, tiny_gene

from learngene_jax import genes
from learngene_jax.errors import GeneError
from learngene_jax.methods.sws import gene as sws
from learngene_jax.models import create_model
from learngene_jax.models.vit import SUBLAYERS


@pytest.mark.parametrize("depth", [1, 3, 4, 7, 12])
def test_tleg_block_i_is_on_the_line(depth):
    _, _, gene = tiny_gene("tleg")
    params = genes.expand(gene, depth)
    theta_b, theta_a = gene.params["blocks"]["theta_b"], gene.params["blocks"]["theta_a"]
    for sub in SUBLAYERS:
        for name, got in params["blocks"][sub].items():
            assert got.shape[0] == depth
            for i in range(depth):
                step = np.float32(i / depth) * np.asarray(theta_a[sub][name])
                want = step + np.asarray(theta_b[sub][name])
                # XLA CPU may fuse the multiply-add (one rounding, u = 2⁻²⁴ relative, where numpy and PyTorch
                # round twice): |fma − unfused| ≤ u·|c·a + b| + u·|c·a| + u·|fl(c·a) + b| ≤ u·(3|c·a| + 2|b|),
                # which the bound covers; the old 2u·(|c·a| + |b|) was reached to 0.99999 of itself
                bound = 2.0**-23 * (2 * np.abs(step) + np.abs(theta_b[sub][name]))
                assert np.all(np.abs(np.asarray(got[i]) - want) <= bound), (sub, name, i)


def test_tleg_copies_shared_parts_and_head():
    _, _, gene = tiny_gene("tleg")
    params = genes.expand(gene, 6)
    for key in ("patch_embed", "pos_embed", "head"):
        for a, b in zip(jax.tree_util.tree_leaves(params[key]), jax.tree_util.tree_leaves(gene.params[key]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    # official layout: the aux's final norm becomes the descendant's fc_norm
    np.testing.assert_array_equal(params["fc_norm"]["scale"], gene.params["norm"]["scale"])
    assert "norm" not in params


def test_new_class_count_gets_a_fresh_head():
    _, _, gene = tiny_gene("tleg")
    params = genes.expand(gene, 3, num_classes=7)
    assert params["head"]["kernel"].shape == (TINY["width"], 7)
    assert float(jnp.abs(params["head"]["bias"]).max()) == 0.0


@pytest.mark.parametrize("source", [(0, 0, 1, 2, 2), (2, 1, 0), (1,), (0, 1, 2, 0, 1, 2, 0, 1)])
def test_sws_block_i_is_its_stage(source):
    _, _, gene = tiny_gene("sws")
    params = genes.expand(gene, layers_source=source)
    stages = gene.params["blocks"]["stages"]
    for sub in SUBLAYERS:
        for name, got in params["blocks"][sub].items():
            assert got.shape[0] == len(source)
            for i, s in enumerate(source):
                np.testing.assert_array_equal(got[i], stages[sub][name][s])


@pytest.mark.parametrize("method", ["tleg", "sws"])
def test_exact_descendant_at_aux_depth_is_the_aux(method):
    model, params, gene = tiny_gene(method)
    x = images()
    aux_logits = model.apply({"params": params}, x)
    des = genes.descendant_model(gene, model.depth, layout="exact")
    des_logits = des.apply({"params": genes.expand(gene, model.depth, layout="exact")}, x)
    np.testing.assert_allclose(des_logits, aux_logits, atol=2e-6, rtol=0)
    # the official layout (pool, then fc_norm with eps 1e-6) is a different function
    off = genes.descendant_model(gene, model.depth)
    off_logits = off.apply({"params": genes.expand(gene, model.depth)}, x)
    assert float(jnp.abs(off_logits - aux_logits).max()) > 1e-3


def test_gradients_reach_theta_a_and_theta_b():
    model, params, _ = tiny_gene("tleg")
    x, labels = images(4), jnp.array([0, 1, 2, 3])

    def loss(p):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    grads = jax.grad(loss)(params)
    for theta in ("theta_a", "theta_b"):
        for sub in SUBLAYERS:
            for g in jax.tree_util.tree_leaves(grads["blocks"][theta][sub]):
                assert float(jnp.abs(g).max()) > 0, (theta, sub)
    # θ_A gets no gradient from layer 0 (coefficient 0): its gradient is the c-weighted sum of the layers'
    assert not np.allclose(grads["blocks"]["theta_a"]["fc1"]["kernel"], grads["blocks"]["theta_b"]["fc1"]["kernel"])


def test_tleg_ablation_keeps_other_sublayers_per_layer():
    model, params, gene = tiny_gene("tleg", expanded=("qkv", "proj"))
    assert set(params["blocks"]) == {"theta_a", "theta_b", "layers"}
    assert set(params["blocks"]["layers"]) == {"norm1", "norm2", "fc1", "fc2"}
    assert params["blocks"]["layers"]["fc1"]["kernel"].shape == (4, 48, 192)
    assert set(gene.params["blocks"]) == {"theta_a", "theta_b"}
    des = genes.expand(gene, 6, rng=jax.random.key(3))
    assert des["blocks"]["fc1"]["kernel"].shape == (6, 48, 192)
    assert des["blocks"]["qkv"]["kernel"].shape == (6, 48, 144)
    with pytest.raises(GeneError, match="not part of this gene"):
        genes.aux_params(gene)


def test_sws_default_layers_source_rule():
    stages = (3, 3, 4, 3, 3)
    assert sws.default_layers_source(stages, 12) == (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4)  # official list
    assert sws.default_layers_source(stages, 16) == (0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4)  # the aux
    assert sws.default_layers_source(stages, 8) == (0, 0, 1, 1, 2, 2, 3, 4)
    assert sws.default_layers_source(stages, 2) == (0, 4)  # the head was trained on the last stage's output
    assert sws.default_layers_source(stages, 1) == (4,)


@pytest.mark.parametrize("stages", [(3, 3, 4, 3, 3), (2, 1, 2), (1, 1), (4, 4, 4), (1, 5), (6,)])
def test_sws_default_layers_source_properties_over_depths_1_to_32(stages):
    """The last stage is always present, stage order is kept, no stage loses layers as the depth grows, every
    stage is present once the depth allows it, and the aux depth gives the aux layout."""
    previous = np.zeros(len(stages), int)
    for depth in range(1, 33):
        source = sws.default_layers_source(stages, depth)
        counts = np.bincount(source, minlength=len(stages))
        assert len(source) == depth and list(source) == sorted(source)
        assert source[-1] == len(stages) - 1
        assert (counts >= previous).all() and counts.sum() == previous.sum() + 1, (depth, counts, previous)
        if depth >= len(stages):
            assert (counts > 0).all(), (depth, counts)
        if depth == sum(stages):
            assert tuple(counts) == stages
        previous = counts


def test_sws_default_expansion_used_without_layers_source():
    _, _, gene = tiny_gene("sws")
    params = genes.expand(gene, 5)
    np.testing.assert_array_equal(params["blocks"]["fc2"]["bias"][2], gene.params["blocks"]["stages"]["fc2"]["bias"][1])


@pytest.mark.parametrize("method,kwargs,message", [
    ("tleg", dict(depth=0), "depth must be an integer >= 1"),
    ("tleg", dict(depth=-2), "depth must be an integer >= 1"),
    ("tleg", dict(depth=3, layers_source=[0, 1, 2]), "takes no layers_source"),
    ("sws", dict(layers_source=[0, 3, 1]), "unknown stages \\[3\\]"),
    ("sws", dict(layers_source="0,1,x"), "comma-separated stage ids"),
    ("sws", dict(depth=4, layers_source=[0, 1]), "2 entries but depth is 4"),
    ("sws", dict(depth=None), "give a descendant depth or a layers_source"),
    ("tleg", dict(depth=3, layout="weird"), "unknown descendant layout"),
])
def test_bad_expansion_arguments(method, kwargs, message):
    _, _, gene = tiny_gene(method)
    depth = kwargs.pop("depth", None)
    with pytest.raises(GeneError, match=message):
        genes.expand(gene, depth, **kwargs)


def test_unknown_method_and_wrong_aux_params():
    with pytest.raises(GeneError, match="unknown learngene method 'pool2'"):
        genes.get_method("pool2")
    model, params, gene = tiny_gene("tleg")
    bad = dict(params, pos_embed=params["pos_embed"][:, :3])
    with pytest.raises(GeneError, match="pos_embed has shape \\(1, 3, 48\\), expected \\(1, 16, 48\\)"):
        genes.extract_gene(bad, gene.meta)


def test_scan_and_unrolled_encoders_agree():
    model = create_model("vit", **TINY, depth=3)
    x = images()
    params = model.init(jax.random.key(0), x)["params"]
    a = model.apply({"params": params}, x)
    b = model.clone(scan_layers=True).apply({"params": params}, x)
    c = model.clone(remat=True, scan_layers=True).apply({"params": params}, x)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
