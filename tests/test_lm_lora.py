"""LoRA runs of the trainer, adapter genes (Heur / Auto Learngene with LoRA), layer genes, text tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import lm_smoke_config

from learngene_jax.config_lib import with_changes
from learngene_jax.errors import ConfigError, DataError, GeneError
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.methods.heur import lm
from learngene_jax.methods.heur.lm_stream import epochs_to_reach
from learngene_jax.models import lora
from learngene_jax.models.io import load_model, save_model
from learngene_jax.models.llama import Llama

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 12)), jnp.int32)
TARGETS = ("q", "v", "up")


def _base(tmp_path, depth=3, seed=0):
    model = Llama(vocab_size=256, width=16, depth=depth, num_heads=2, num_kv_heads=1, mlp_dim=24, max_positions=32)
    variables = model.init(jax.random.key(seed), TOKENS)
    return model, variables, save_model(tmp_path / "base", model, variables)


def _trained_lora(model, variables, rank=2, seed=1):
    """A LoRA model on `model` whose adapters are random and nonzero (A and B), as after training."""
    lm_model = lora.with_lora(model, rank, 4.0, TARGETS)
    adapters = lm_model.init(jax.random.key(seed), TOKENS)["params"]["lora"]
    keys = jax.random.split(jax.random.key(seed + 1), len(adapters))
    adapters = {k: v + 0.1 * jax.random.normal(kk, v.shape) for kk, (k, v) in zip(keys, adapters.items(), strict=True)}
    return lm_model, {"params": {**variables["params"], "lora": adapters}}




def test_adapter_genes_keep_the_chosen_layers_and_start_them_in_a_descendant(tmp_path):
    from learngene_jax.students import build_student

    model, variables, base_dir = _base(tmp_path)
    anc, anc_vars = _trained_lora(model, variables)
    meta = lm.meta_from_aux(anc)
    assert meta.layers == (0, 1, 2) and meta.scale == 2.0 and meta.targets == TARGETS
    gene = lm.select(lm.extract(anc_vars["params"], meta), (2,))  # Heur: the last layer
    path = save_gene(tmp_path / "gene", gene)
    loaded = load_gene(path)
    assert loaded.meta.layers == (2,)
    np.testing.assert_array_equal(loaded.params["lora"]["q_lora_b"][0], anc_vars["params"]["lora"]["q_lora_b"][2])

    for gene_layers, slot in (((), 2), ((0,), 0)):  # the gene's own layer, or another one
        cfg = lm_smoke_config(init=str(base_dir), **{"lora.rank": 2, "lora.alpha": 4.0, "lora.targets": TARGETS,
                                                "lora.gene": str(path), "lora.gene_layers": gene_layers})
        student = build_student(cfg, 256)
        start = student.init(jax.random.key(5), student.source)["params"]
        for name, value in start["lora"].items():
            np.testing.assert_array_equal(value[slot], anc_vars["params"]["lora"][name][2])
            others = [i for i in range(3) if i != slot]
            if name.endswith("_lora_b"):  # fresh adapters change nothing (B = 0)
                assert not np.asarray(value)[others].any()
        np.testing.assert_array_equal(start["layers"]["q"], variables["params"]["layers"]["q"])
        assert student.trainable(("lora", "q_lora_a")) and not student.trainable(("layers", "q"))


def test_auto_criterion_is_the_relative_change_of_the_effective_weights(tmp_path):
    model, variables, _ = _base(tmp_path)
    anc, start_vars = _trained_lora(model, variables, seed=1)
    _, end_vars = _trained_lora(model, variables, seed=7)
    meta = lm.meta_from_aux(anc)
    start, end = lm.extract(start_vars["params"], meta), lm.extract(end_vars["params"], meta)
    rho = lm.adapter_change(variables["params"]["layers"], start, end)
    s, e, w = start_vars["params"]["lora"], end_vars["params"]["lora"], variables["params"]["layers"]
    for layer in range(3):
        num = den = 0.0
        for t in TARGETS:
            d0 = 2.0 * np.asarray(s[f"{t}_lora_a"][layer]) @ np.asarray(s[f"{t}_lora_b"][layer])
            d1 = 2.0 * np.asarray(e[f"{t}_lora_a"][layer]) @ np.asarray(e[f"{t}_lora_b"][layer])
            num += ((d1 - d0) ** 2).sum()
            den += ((np.asarray(w[t][layer]) + d0) ** 2).sum()
        assert rho[layer] == pytest.approx(np.sqrt(num / den), rel=1e-6)
    assert lm.adapter_change(variables["params"]["layers"], start, start).max() == 0


def test_a_lora_run_trains_only_the_adapters_and_exports_the_merged_model(tmp_path):
    from learngene_jax.convert.hf import from_hf, to_hf
    from learngene_jax.train import train

    model, variables, base_dir = _base(tmp_path)
    cfg = lm_smoke_config(init=str(base_dir), eval_every_steps=1, eval_at_start=True,
                     **{"lora.rank": 2, "lora.targets": TARGETS})
    out = train(cfg, tmp_path / "run")
    trained, tv = load_model(tmp_path / "run" / "model")
    assert isinstance(trained, lora.LoRALlama)
    for k in ("layers", "embed", "norm", "lm_head"):  # the base is untouched (no weight decay either)
        jax.tree.map(np.testing.assert_array_equal, tv["params"][k], variables["params"][k])
    assert np.abs(np.asarray(tv["params"]["lora"]["q_lora_b"])).max() > 0  # the adapters moved off B = 0
    assert [c["step"] for c in out["curve"]] == [0, 1, 2, 3] and out["curve"][-1]["loss"] == out["loss"]
    gene = load_gene(out["gene"])  # every LoRA run saves its adapters as a gene
    assert gene.meta.method == "heur_lora" and gene.meta.layers == (0, 1, 2)
    hf_dir = to_hf(trained, tv, tmp_path / "hf")  # Hugging Face gets W + (α/r)·A B
    plain, pv = from_hf(hf_dir)
    np.testing.assert_allclose(plain.apply(pv, TOKENS), trained.apply(tv, TOKENS), atol=1e-5)


def test_layer_genes_put_the_inherited_layers_at_the_bottom_or_the_top(tmp_path):
    model, variables, _ = _base(tmp_path, depth=4)
    fresh = {k: jnp.full((3, *v.shape[1:]), 7.0) for k, v in variables["params"]["layers"].items()}
    src = variables["params"]["layers"]
    bottom = lm.layer_gene_params(variables["params"], 4, (0, 1), 3, "bottom", fresh)
    top = lm.layer_gene_params(variables["params"], 4, (2, 3), 3, "top", fresh)
    for k in src:
        np.testing.assert_array_equal(bottom["layers"][k][:2], src[k][:2])
        np.testing.assert_array_equal(top["layers"][k][1:], src[k][2:])
        assert (bottom["layers"][k][2] == 7).all() and (top["layers"][k][0] == 7).all()
    np.testing.assert_array_equal(bottom["embed"], variables["params"]["embed"])
    with pytest.raises(ConfigError, match="layer_gene.layers"):
        lm.layer_gene_params(variables["params"], 4, (0, 1, 2, 3), 3, "bottom", fresh)
    with pytest.raises(ConfigError, match="place"):
        lm.layer_gene_params(variables["params"], 4, (0,), 3, "middle", fresh)


def test_epochs_to_reach_interpolates_between_evaluations():
    curve = [{"epoch": 0.0, "loss": 3.0}, {"epoch": 0.5, "loss": 2.0}, {"epoch": 1.0, "loss": 1.0}]
    assert epochs_to_reach(curve, 1.5) == pytest.approx(0.75)
    assert epochs_to_reach(curve, 3.0) == 0.0 and epochs_to_reach(curve, 0.9) is None


@pytest.mark.parametrize("changes, error, message", [
    ({"lora.rank": 2}, ConfigError, "--config.init=MODEL_DIR"),
    ({"lora.rank": 2, "lora.targets": ("qkv",), "init": "BASE"}, ConfigError, "unknown \\['qkv'\\]"),
    ({"lora.rank": 2, "lora.layers": (5,), "init": "BASE"}, ConfigError, "layers in 0..2"),
    ({"lora.rank": 4, "lora.alpha": 8.0, "lora.targets": TARGETS, "lora.gene": "GENE", "init": "BASE"}, ConfigError,
     "rank 2"),
    ({"lora.rank": 2, "lora.gene": "TLEG", "init": "BASE"}, ConfigError, "is a tleg_lm gene"),
    ({"lora.gene": "GENE"}, ConfigError, "set lora.rank"),
    ({"lora.rank": 2, "init": "BASE", "init_method": "layer_gene"}, ConfigError, "does not combine with LoRA"),
    ({"init_method": "layer_gene", "depth": 2}, ConfigError, "--config.init=MODEL_DIR"),
    ({"init_method": "layer_gene", "init": "BASE"}, ConfigError, "--config.depth=D"),
    ({"init_method": "layer_gene", "init": "BASE", "depth": 2, "layer_gene.layers": (0, 0)}, ConfigError,
     "distinct layers"),
    ({"lora.rank": 99, "init": "BASE"}, ConfigError, "integer in 1..8"),
    ({"lora.rank": 2, "lora.alpha": 0.0, "init": "BASE"}, ConfigError, "alpha must be > 0"),
    ({"lora.rank": 2, "lora.targets": TARGETS, "lora.alpha": 4.0, "lora.gene": "GENE", "init": "OTHER"}, ConfigError,
     "other base weights"),
    ({"init": "IMAGE"}, ConfigError, "not a language model"),
    ({"data.documents": ("nosuchpackage/*",)}, DataError, "selects 0 train and 0 held-out"),
    ({"data.fraction": 0.0}, ConfigError, "data.fraction"),
])
def test_bad_lora_and_task_settings_are_named_errors(tmp_path, changes, error, message):
    from learngene_jax.genes.core import LMGeneMeta
    from learngene_jax.methods.tleg import lm as tleg_lm
    from learngene_jax.train import train

    model, variables, base_dir = _base(tmp_path)
    anc, anc_vars = _trained_lora(model, variables)
    gene_dir = save_gene(tmp_path / "gene", lm.extract(anc_vars["params"], lm.meta_from_aux(anc)))
    aux = tleg_lm.AUX["llama"](vocab_size=256, width=16, depth=2, num_heads=2, num_kv_heads=1, mlp_dim=24,
                               max_positions=32)
    tleg_meta = tleg_lm.meta_from_aux(aux)
    assert isinstance(tleg_meta, LMGeneMeta)
    tleg_dir = save_gene(tmp_path / "tleg", tleg_lm.extract(aux.init(jax.random.key(0), TOKENS)["params"], tleg_meta))
    other = save_model(tmp_path / "other", model, model.init(jax.random.key(9), TOKENS))  # same shapes, other weights
    from learngene_jax.models import create_model

    vit = create_model("vit", width=16, depth=1, num_heads=2, patch_size=4, image_size=8, num_classes=3)
    image = save_model(tmp_path / "image", vit, vit.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    paths = {"BASE": str(base_dir), "GENE": str(gene_dir), "TLEG": str(tleg_dir), "OTHER": str(other),
             "IMAGE": str(image)}
    changes = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(error, match=message):
        train(lm_smoke_config(**changes), tmp_path / "run")


def test_an_adapter_gene_is_not_expanded_like_a_depth_gene(tmp_path):
    from learngene_jax import genes

    model, variables, _ = _base(tmp_path)
    anc, anc_vars = _trained_lora(model, variables)
    gene = lm.extract(anc_vars["params"], lm.meta_from_aux(anc))
    with pytest.raises(GeneError, match="lora.gene"):
        genes.expand(gene, 4)


def test_decoder_weights_embeddings_and_adapters_get_weight_decay_norms_do_not():
    from learngene_jax.optim import decay_mask

    model = lora.with_lora(Llama(vocab_size=256, width=16, depth=2, num_heads=2, num_kv_heads=1, mlp_dim=24,
                                 max_positions=32), 2, 4.0, TARGETS)
    mask = decay_mask(jax.eval_shape(lambda: model.init(jax.random.key(0), TOKENS))["params"])
    assert all(mask["layers"][k] for k in ("q", "k", "v", "o", "gate", "up", "down"))
    assert mask["embed"] and mask["lm_head"] and all(mask["lora"].values())
    assert not mask["norm"] and not mask["layers"]["attn_norm"] and not mask["layers"]["mlp_norm"]


def test_an_adapter_gene_fits_its_base_read_from_hugging_face_and_targets_parse_from_the_command_line(tmp_path):
    from learngene_jax.convert.hf import to_hf
    from learngene_jax.students import build_student

    model, variables, base_dir = _base(tmp_path)
    anc, anc_vars = _trained_lora(model, variables)
    gene_dir = save_gene(tmp_path / "gene", lm.extract(anc_vars["params"], lm.meta_from_aux(anc)))
    hf_dir = to_hf(model, variables, tmp_path / "hf")  # the same base, spelled by Hugging Face (head_dim explicit)
    cfg = lm_smoke_config(init=str(hf_dir), **{"lora.rank": 2, "lora.alpha": 4.0, "lora.targets": ("q,v,up",),
                                          "lora.gene": str(gene_dir)})
    student = build_student(cfg, 256)
    start = student.init(jax.random.key(1), student.source)["params"]["lora"]
    np.testing.assert_array_equal(start["up_lora_b"], anc_vars["params"]["lora"]["up_lora_b"])
    other = save_model(tmp_path / "other", model, model.init(jax.random.key(9), TOKENS))
    allowed = build_student(with_changes(cfg, init=str(other), **{"lora.other_base": True}), 256)
    assert allowed.model.lora_targets == TARGETS


def test_to_hf_refuses_an_aux_decoder(tmp_path):
    from learngene_jax.convert.hf import to_hf
    from learngene_jax.errors import ConversionError
    from learngene_jax.methods.tleg import lm as tleg_lm

    aux = tleg_lm.AUX["llama"](vocab_size=256, width=16, depth=2, num_heads=2, num_kv_heads=1, mlp_dim=24,
                               max_positions=32)
    with pytest.raises(ConversionError, match="expand its gene"):
        to_hf(aux, aux.init(jax.random.key(0), TOKENS), tmp_path / "hf")
