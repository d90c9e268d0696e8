"""TLEG / SWS language-model genes distilled from a Hugging Face Llama teacher, at scale (issue 18, item 7).

Stage 1 distils a TLEG (or SWS) aux decoder from the teacher with token-level KD on a tokenized corpus you have and
saves the gene in WORKDIR/gene; stage 2 expands the gene into a plain Llama of depth D and trains it on; `stage=scratch`
trains the same Llama from random init for the comparison. The teacher is read straight from its Hugging Face
directory (config.json + safetensors, sharded and bf16 included); the corpus is tokenized once with the teacher's own
tokenizer into memory-mapped token files (`learngene tokenize`), so student and teacher share the vocabulary:

    learngene tokenize --corpus folder_text --path ~/text --tokenizer ~/hf/TinyLlama-1.1B --out runs/tokens
    learngene train --config configs/lm_hf_teacher.py:method=tleg,stage=aux --workdir runs/tleg_lm_aux \
        --config.distill.teacher_init=~/hf/TinyLlama-1.1B --config.data.path=runs/tokens
    learngene adapt --gene runs/tleg_lm_aux/gene --depth 8 --workdir runs/tleg_lm_d8 \
        --config configs/lm_hf_teacher.py:stage=descendant --config.data.path=runs/tokens
    learngene convert to-hf --model-dir runs/tleg_lm_d8/model --out runs/tleg_lm_d8_hf   # transformers loads it

Multi-host (a TPU VM pod slice or several GPU hosts): run the same command on every host (launch/tpu_vm.sh; the
distributed start is automatic), with the token files on each host or a shared disk; the global batch is split over
hosts. Sharding: FSDP over every device (params, gradients and AdamW state sharded on their largest divisible axis,
`sharding.strategy=fsdp`, mesh data=1 × fsdp=all); for more chips than the model needs, set e.g. `mesh.data=2`.

Sizes: a 1.1B Llama teacher (TinyLlama: width 2048, 22 layers, 32 heads / 4 KV heads, vocabulary 32,000) and an aux
of width 768, 12 heads / 4 KV heads, MLP 2048, 12 layers (gene ≈ 2 layers' params + embeddings and head); context
1024, global batch 256 windows (262,144 tokens per step), bf16 compute ('auto'), AdamW (0.9, 0.95, wd 0.1), lr 6e-4
→ 6e-5 cosine after 2,000 warm-up steps, clip 1.0. Not run here (no accelerator, no such corpus); `:smoke=True` is a
seconds-long version with the same code path for tests.

Memory: sized for one 8-chip host, v5e-8 (16 GiB HBM per chip) or 8×H100 (80 GiB). Each step's 256 windows run as 4
microbatches of 8 windows per chip (`optim.accum_steps=4`: the same update as one batch of 256), each decoder layer
recomputed in the backward pass (`model.remat='full'`), the head and the CE/KD losses 128 tokens at a time
(`loss_chunk=128`, no (batch, 1024, 32000) logits), the frozen teacher stored in bf16 (`frozen_precision='auto'`).
The compiled stage-1 step then needs 5.1 GiB per chip (arguments 0.34, temporaries 4.76, outputs 0.09 of them
donated), measured from shapes alone with

    learngene bench memory --config configs/lm_hf_teacher.py:method=tleg,stage=aux --devices 8

(XLA's CPU compile of the step for 8 fake devices with this mesh and bf16 — TPU and GPU compilers assign buffers
differently, so an estimate; without the first three settings the same command gives 88.5 GiB). `stage=scratch` (depth
8) gives 2.4 GiB. On 8×H100, `--config.optim.accum_steps=1` (32 windows per chip at once) gives 16.5 GiB.
tests/test_lm_memory.py keeps the stage-1 figure under 16 GiB.
"""

import ml_collections

from learngene_jax.config_lib import base_config, parse_arg
from learngene_jax.errors import ConfigError, fail

AUX = dict(width=768, num_heads=12, num_kv_heads=4, mlp_dim=2048, rope_theta=10_000.0, eps=1e-5)
SMOKE = dict(width=32, num_heads=2, num_kv_heads=1, mlp_dim=32, rope_theta=10_000.0, eps=1e-5)
# What `learngene bench memory` assumes where a run reads sizes from files: the tokenizer's vocabulary and the teacher
# directory's architecture (TinyLlama-1.1B's config.json; smoke: a small Llama).
TEACHER = dict(name="llama", width=2048, depth=22, num_heads=32, num_kv_heads=4, mlp_dim=5632, vocab_size=32_000,
               max_positions=2048, rope_theta=10_000.0, eps=1e-5)
SMOKE_TEACHER = dict(name="llama", width=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=48, vocab_size=300,
                     max_positions=64)


def get_config(arg=None):
    """`arg`: method=tleg|sws, stage=aux|descendant|scratch, depth=D (scratch), smoke=True (tests)."""
    args = parse_arg(arg, {"method": "tleg", "stage": "aux", "depth": 8, "smoke": False})
    method, stage, smoke = args["method"], args["stage"], args["smoke"]
    if method not in ("tleg", "sws") or stage not in ("aux", "descendant", "scratch"):
        fail(ConfigError, f"method must be tleg or sws and stage aux, descendant or scratch, got {method!r}, "
                          f"{stage!r}")
    c = base_config()
    c.name = f"{method}_lm_{stage}"
    c.objective, c.precision = "lm", "auto"
    c.data.update(dict(name="token_files", path="", context=16 if smoke else 1024, eval_windows=16 if smoke else 512))
    c.batch_size, c.eval_batch_size = (8, 8) if smoke else (256, 64)
    c.epochs, c.max_steps = 10_000, 2 if smoke else 20_000
    c.log_every_steps, c.eval_every_steps = (1, 0) if smoke else (50, 1000)
    c.eval_every_epochs = 10_000  # evaluate by steps (an epoch of a large corpus is the whole run or more)
    c.checkpoint.update(dict(every_steps=1000, keep=3))
    c.optim.update(dict(scale_lr=False, lr=6e-4, min_lr=6e-5, warmup_steps=0 if smoke else 2000, b2=0.95,
                        weight_decay=0.1, grad_clip=1.0, accum_steps=1 if smoke else 4))
    c.loss_chunk = 8 if smoke else 128
    c.memory_estimate = ml_collections.ConfigDict(dict(vocab=300 if smoke else 32_000,
                                                       teacher=SMOKE_TEACHER if smoke else TEACHER))
    c.mesh.update(dict(data=1, fsdp=-1))
    c.sharding.strategy = "fsdp"
    arch = SMOKE if smoke else AUX
    if stage == "aux":
        depth = 3 if smoke else 12
        model = {"name": f"{method}_llama", **arch, "depth": depth, "remat": "full"}
        if method == "sws":
            model["stage_sizes"] = (1, 2) if smoke else (4, 4, 4)
        c.model = ml_collections.ConfigDict(model)
        c.distill.update(dict(type="soft", alpha=0.5, temperature=1.0))  # teacher_init: the HF directory
    elif stage == "descendant":
        c.model = ml_collections.ConfigDict({"name": "descendant", "remat": "full"})  # --gene / --depth (adapt)
        c.optim.update(dict(lr=3e-4, min_lr=3e-5))
        c.max_steps = 2 if smoke else 5_000
    else:
        c.model = ml_collections.ConfigDict({"name": "llama", **arch, "depth": args["depth"], "remat": "full"})
    return c
