"""The learngene claim at nanoGPT's anchor (issue 26.2, configs/lm_anchor.py): the steps-to-reach computation on
synthetic curves, the FLOP account against nanoGPT's own numbers and hand arithmetic, TLEG and SWS expansion of
nanoGPT-style GPTs (no biases), and a smoke run of the whole experiment through `main` producing every arm."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.experiments import lm_anchor
from learngene_jax.models.llama import GPT2


def test_steps_to_reach_interpolates_the_first_crossing():
    steps, losses = [0, 100, 200, 300, 400], [4.0, 3.0, 2.0, 1.5, 1.75]
    assert lm_anchor.steps_to_reach(steps, losses, 2.5) == 150.0  # 100 + (3 − 2.5) / (3 − 2) · 100
    assert lm_anchor.steps_to_reach(steps, losses, 1.75) == 250.0  # the first crossing, not the later 1.75 at 400
    assert lm_anchor.steps_to_reach(steps, losses, 2.0) == 200.0  # exactly on an evaluation
    assert lm_anchor.steps_to_reach(steps, losses, 5.0) == 0.0  # already there at init
    assert lm_anchor.steps_to_reach(steps, losses, 1.25) is None  # never


def test_aggregate_takes_each_seeds_own_scratch_loss_as_the_target():
    def arm(losses, short=None):
        row = {"depth": 2, "params": 10, "init_loss": losses[0], "loss": losses[-1],
               "curve": {"step": [0, 100, 200], "loss": losses}}
        return row if short is None else {**row, "short_loss": short}

    per_seed = [{"arms": {"tleg": [arm([3.0, 2.0, 1.0], 1.5)], "scratch": [arm([4.0, 3.0, 2.0])]}},
                {"arms": {"tleg": [arm([3.0, 2.5, 2.25], 2.5)], "scratch": [arm([4.0, 3.0, 2.0])]}}]
    row = lm_anchor.aggregate(per_seed, [2], scratch_steps=300)[0]
    assert row["tleg"]["reach"]["per_seed"] == [100.0, None] and row["tleg"]["reach"]["within"] == 1
    assert row["tleg"]["reach"]["mean"] == 100.0 and row["tleg"]["reach"]["n"] == 1
    assert row["tleg"]["short_loss"]["at_or_below"] == 1 and row["scratch"]["reach"]["per_seed"] == [200.0, 200.0]
    assert row["tleg"]["loss"]["mean"] == 1.625 and row["tleg"]["loss"]["std"] == pytest.approx(0.625 * 2 ** 0.5)
    assert row["tleg"]["curve"]["mean"] == [3.0, 2.25, 1.625]
    claims = lm_anchor.claims([row], 300, 100)
    assert claims == [{"arm": "tleg", "depth": 2, "seeds": 2, "reach_within_third": 1, "short_at_or_below": 1,
                       "holds": False}]


def test_flops_follow_nanogpts_estimate_mfu():
    """nanoGPT's 4-layer, 128-wide Shakespeare-char GPT: N = 12·128²·4 + 2·128·4 (LayerNorms) + 128 (ln_f) + 65·128
    (wte, tied head) = 795,904 without the position table; 6·N + 12·L·d·T per token."""
    model = GPT2(vocab_size=65, width=128, depth=4, num_heads=4, max_positions=64, bias=False)
    assert lm_anchor.flop_params(model) == 795_904
    assert lm_anchor.flops_per_token(795_904, 4, 128, 64) == 5_168_640
    assert lm_anchor.forward_flops_per_token(795_904, 4, 128, 64) * 3 == 5_168_640


def test_cost_account_arithmetic():
    config = ml_collections.ConfigDict(dict(
        batch_size=2, max_steps=30, data=dict(context=8),
        model=dict(name="gpt2", width=16, depth=4, num_heads=2, bias=False),
        lm_anchor=dict(teacher_depth=3, teacher_steps=10, tleg_depth=3, sws_stage_sizes=(1, 1), aux_steps=20)))
    rows = [{"depth": d, "tleg": {"reach": {"mean": 10.0, "n": 2, "per_seed": [9.0, 11.0]}},
             "sws": {"reach": {"mean": None, "n": 0, "per_seed": [None, None]}},
             "inherit": {"reach": {"mean": 15.0, "n": 2, "per_seed": [15.0, 15.0]}}} for d in (1, 2)]
    costs = lm_anchor.cost_account(config, 10, rows)

    def n(depth):  # 12·d² + 2·d per block, ln_f, the 10-token table
        return depth * (12 * 16 ** 2 + 2 * 16) + 16 + 10 * 16

    def step(depth):  # FLOPs of one step of 2 × 8 tokens
        return 16 * (6 * n(depth) + 12 * depth * 16 * 8)

    teacher = 10 * step(3)
    aux = {"tleg": 20 * (step(3) + step(3) // 3), "sws": 20 * (step(2) + step(3) // 3)}
    assert costs["one_off"]["teacher"]["tflop"] == pytest.approx(teacher / 1e12)
    assert costs["one_off"]["sws_aux"]["tflop"] == pytest.approx(aux["sws"] / 1e12)
    genes = costs["genes"]
    assert genes["tleg"]["tflop"] == pytest.approx((teacher + aux["tleg"]) / 1e12)
    assert genes["inherit"]["per_descendant_tflop"] == pytest.approx(teacher / 2 / 1e12)
    arm = {(a["arm"], a["depth"]): a for a in costs["arms"]}
    assert arm["tleg", 2]["reach_tflop"] == pytest.approx(10 * step(2) / 1e12)
    assert arm["tleg", 2]["with_gene_tflop"] == pytest.approx((10 * step(2) + (teacher + aux["tleg"]) / 2) / 1e12)
    assert arm["tleg", 2]["ratio"] == pytest.approx(arm["tleg", 2]["with_gene_tflop"] / (30 * step(2) / 1e12))
    assert arm["sws", 1]["reach_tflop"] is None and genes["sws"]["pays_back_after"] is None
    saving = ((30 - 15) * step(1) + (30 - 15) * step(2)) / 2 / 1e12
    assert genes["inherit"]["pays_back_after"] == pytest.approx(teacher / 1e12 / saving)


@pytest.mark.parametrize("method", ["tleg", "sws"])
def test_nanogpt_style_gpt_genes_expand_by_their_rule(method):
    """TLEG / SWS aux GPTs without biases (nanoGPT's bias=False): descendant layers follow the expansion rule and the
    aux depth reproduces the aux."""
    from conftest import randomize

    from learngene_jax import genes
    from learngene_jax.models import create_model

    tokens = jnp.asarray(np.arange(24).reshape(2, 12) % 65)
    extra = {"stage_sizes": (1, 2, 1)} if method == "sws" else {}
    aux = create_model(f"{method}_gpt2", vocab_size=65, width=16, depth=4, num_heads=2, max_positions=16, bias=False,
                       gelu_approximate=False, position_std=0.02, **extra)
    params = randomize(aux.init(jax.random.key(0), tokens)["params"])
    gene = genes.extract_gene(params, genes.get_method(f"{method}_lm").meta_from_aux(aux))
    assert not any("bias" in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params))
    for depth in (2, 3):
        layers = genes.expand(gene, depth)["layers"]
        for name, stack in layers.items():
            for i in range(depth):
                if method == "tleg":
                    want = params["tleg"]["theta_b"][name] + np.float32(i / depth) * params["tleg"]["theta_a"][name]
                else:
                    from learngene_jax.methods.sws.gene import default_layers_source

                    want = params["sws"]["stages"][name][default_layers_source((1, 2, 1), depth)[i]]
                np.testing.assert_allclose(stack[i], want, rtol=1e-6, atol=1e-6)
    at_aux = genes.expand(gene, 4) if method == "tleg" else genes.expand(gene, layers_source="0,1,1,2")
    np.testing.assert_allclose(genes.descendant_model(gene, 4).apply({"params": at_aux}, tokens),
                               aux.apply({"params": params}, tokens), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_smoke_run_through_main_writes_every_arm(tmp_path):
    from test_nanogpt import _play

    path = tmp_path / "input.txt"
    path.write_text(_play(3000))
    work = tmp_path / "w"
    run_module("learngene_jax.main", "--config=configs/lm_anchor.py:smoke=True", f"--config.data.path={path}",
               f"--workdir={work}")
    summary = json.loads((work / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and [r["depth"] for r in summary["rows"]] == [1]
    for row in summary["rows"]:
        assert set(row) == {"depth", "tleg", "sws", "inherit", "scratch"}
        for arm in ("tleg", "sws", "inherit", "scratch"):
            r = row[arm]
            assert r["curve"]["step"] == [0, 2, 4, 6] and r["loss"]["n"] == 2 and np.isfinite(r["loss"]["mean"])
            assert len(r["reach"]["per_seed"]) == 2 and ("short_loss" in r) == (arm != "scratch")
    for s in summary["per_seed"]:  # each seed's own teacher; the curve's last point is the final loss
        assert s["arms"]["scratch"][0]["curve"]["loss"][-1] == s["arms"]["scratch"][0]["loss"]
    assert summary["per_seed"][0]["genes"]["teacher"]["loss"] != summary["per_seed"][1]["genes"]["teacher"]["loss"]
    assert set(summary["costs"]["genes"]) == {"tleg", "sws", "inherit"} and len(summary["claims"]) == 3
    text = (work / "summary.md").read_text()
    assert "steps to reach scratch's final loss" in text and "Cost account" in text and (work / "summary.png").is_file()
    from learngene_jax import records

    record = records.from_workdir(work, tmp_path)
    assert records.summary_kind(record["files"]["summary.json"]) is None and "summary.md" in record["markdown"]
    assert record["provenance"]["seeds"] == [0, 1]
