"""The learngene claim at nanoGPT's Shakespeare-char anchor (issue 26.2): nanoGPT's CPU recipe
(configs/nanogpt_shakespeare_char.py: GPT-2 blocks without biases, width 128, 4 heads, its init, AdamW β 0.9/0.99,
wd 0.1, lr 1e-3 with 100 warm-up steps and a cosine to 1e-4, clip 1, batches of 12 random 64-character windows) is
the reference. Per seed (learngene_jax/experiments/lm_anchor.py): an 8-layer teacher → a TLEG aux (depth 8) and an
SWS aux (stages 2, 4, 2) of width 128 distilled from it (token-level KD, α 0.5, T 1) → descendants of depths 2, 4
and 6 expanded from each gene and from the teacher's first D layers (Inheritune), and scratch GPTs of the same
depths, all trained 2000 steps with the recipe (the same schedule, so their curves compare step for step) and
evaluated every 100 steps on the whole validation split; and each gene's descendants trained 667 steps (a third)
with a schedule of their own. Out: per arm, the loss curve, the steps needed to reach scratch's final loss (from the
curve, interpolated), the FLOP account; WORKDIR/summary.{md,json,png}.

    learngene train --config configs/lm_anchor.py --config.data.path=input.txt --workdir runs/lm_anchor
    python -m learngene_jax.results record --workdir runs/lm_anchor

input.txt: Karpathy's tinyshakespeare (1,115,394 characters, sha256 86c4e6aa…). Result: not yet run. Wall time,
estimated for a quiet 2-core CPU VM (AMD EPYC) from step times at these sizes relative to the recipe's measured 58 ms
per step (docs/records/nanogpt_shakespeare_char_ab.json): ~80 min per seed (teacher ~11 min, the two aux runs ~27,
the twelve 2000-step runs ~24, the nine short runs ~6, evaluations ~13), ~4 h for the three seeds; a finished seed's
stages are reused, so `--config.lm_anchor.seeds='(0,)'` first is a complete one-seed result.

Why these sizes: the teacher is deeper than every descendant (8 > 6), so the layer gene at depth 6 is a part of it
and not the teacher itself, and it is of the genes' width (128) so that its first layers, embeddings and head drop
into a descendant unchanged; both aux runs have the teacher's depth (TLEG's Aux-Net spans the depths its
descendants interpolate; SWS's middle stage is the largest, as in its 3,3,4,3,3 and the LM demo's 3,4,3). Teacher
and aux each train 5000 steps, 2.5× scratch's 2000, so that the aux is not the bottleneck (the LM demo's stopped
after 240 steps, still learning); the summary reports how much each still dropped over its last fifth.

`:smoke=True` is a tiny version (width 32, depth-1 descendants of a 2-layer teacher, a few steps, two seeds; 20 stages,
~30 s) for tests.
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import load_config, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = load_config(Path(__file__).with_name("nanogpt_shakespeare_char.py"), "smoke=True" if smoke else None)
    c.task, c.name = "lm_anchor", "lm_anchor"
    c.lm_anchor = ml_collections.ConfigDict(dict(
        seeds=(0, 1, 2),
        teacher_depth=8, teacher_steps=5000,
        tleg_depth=8, sws_stage_sizes=(2, 4, 2), aux_steps=5000, kd_alpha=0.5, kd_temperature=1.0,
        depths=(2, 4, 6),
        inherit=True,  # the layer gene (Inheritune): the teacher's first D layers + its embeddings and final norm
        eval_every=100,  # descendants and scratch: whole validation split every this many steps (and at step 0)
        gene_eval_every=500,  # teacher and aux runs
        short_steps=667))  # 0: no short runs; else each gene's descendants also train this many steps alone
    if smoke:
        c.lm_anchor.update(dict(seeds=(0, 1), teacher_depth=2, teacher_steps=4, tleg_depth=2, sws_stage_sizes=(1, 1),
                                aux_steps=4, depths=(1,), eval_every=2, gene_eval_every=2, short_steps=2))
    return c
