"""nanoGPT's Shakespeare-char CPU recipe (karpathy/nanoGPT @3adf61e, README "I only have a macbook") with this
project's trainer: a 4-layer GPT of width 128 (4 heads, no biases, exact GELU, tied head, nanoGPT's init, no dropout)
on characters, 2000 AdamW steps of 12 random 64-character windows. nanoGPT's command and its result:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
        --dropout=0.0                                                        → "a loss of only 1.88" (val, README)

Here, on Karpathy's tinyshakespeare input.txt (1,115,394 characters; vocabulary: its 65 sorted characters; first
90 % train, last 10 % validation, as data/shakespeare_char/prepare.py):

    learngene train --config configs/nanogpt_shakespeare_char.py --config.data.path=input.txt --workdir W

W/final.json's `eval_loss` is the validation loss of the final model over the whole validation split in nats per
character: non-overlapping 64-character windows, every character after the first scored once, the partial last
window included (data/text.py `whole_split_starts`); nanoGPT's own number is a 20- or 200-batch estimate on random
windows. W/model holds the weights and tokenizer.json (the 65 characters) for `learngene predict --text` and
`learngene convert to-hf`. launch/shakespeare_char_ab.sh runs this and nanoGPT's train.py side by side (A/B, seeds,
throughput). Measured on this project's 2-core VM, 3 seeds each: docs/language-models.md and its record
docs/records/nanogpt_shakespeare_char_ab.json.

Settings and where nanoGPT sets them (tests/test_recipes.py pins each to its line): bias=False (train.py:56), exact
GELU nn.GELU() (model.py:83), init N(0, 0.02) for every Linear and Embedding (model.py:162-168), N(0, 0.02/√(2·n_layer))
for both c_proj (model.py:144-145), tied head (model.py:138), lr 1e-3, min_lr 1e-4, warmup 100, β2 0.99
(config/train_shakespeare_char.py), warm-up lr·(it + 1)/(warmup + 1) then cosine to min_lr at lr_decay_iters
(train.py:231-242; optim.warmup_lr = lr/101 makes optax's linear warm-up the same values), AdamW β1 0.9, weight decay
0.1 on ≥ 2-D params only (model.py:270-271; optim.py's DECAYED_LEAVES are exactly those), eps 1e-8 (torch's default),
gradient clip 1.0 (train.py:63), batches of random windows (train.py:123: starts uniform in [0, len − block_size)).
nanoGPT evaluates before iterations 0, 250, ..., 2000 and takes one more step after its last evaluation: the model it
evaluates at 2000 has taken 2000 steps, as max_steps=2000 here. Single device (nanoGPT's single process):
mesh.num_devices=1.

`:smoke=True` is a seconds-long version (width 32, 2 layers, 16 characters, 6 steps) for tests.
"""

import ml_collections

from learngene_jax.config_lib import base_config, parse_arg

LR, WARMUP = 1e-3, 100


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = base_config()
    c.name = "nanogpt_shakespeare_char"
    c.objective = "lm"
    c.data.update(dict(name="text_file", path="", tokenizer="char", context=64, eval_windows=0,
                       train_split="train", eval_split="validation",
                       sampling="random"))  # get_batch: random windows, with replacement (not epochs)
    c.batch_size, c.eval_batch_size = 12, 128
    # An "epoch" here is the train text's 15,685 windows of 64 characters, 1,307 steps of 12: two epochs hold the 2000
    # steps, so max_steps ends the run and the cosine schedule spans exactly the 2000 steps (lr_decay_iters=2000).
    c.epochs, c.max_steps = 2, 2000
    c.eval_every_epochs = 2  # one evaluation, of the final model
    # nanoGPT prints every step (--log_interval=1); here a log step syncs and writes metrics.jsonl and TensorBoard,
    # which cost more than the step itself on a 2-core VM (250 steps: 102 ms/step logging each, 45 ms/step every 50)
    c.log_every_steps = 50
    c.checkpoint.every_steps = 100_000  # the final state only
    c.mesh.num_devices = 1
    c.optim.update(dict(name="adamw", lr=LR, scale_lr=False, min_lr=1e-4, warmup_steps=WARMUP,
                        warmup_lr=LR / (WARMUP + 1), schedule="cosine", weight_decay=0.1, b1=0.9, b2=0.99, eps=1e-8,
                        grad_clip=1.0))
    c.model = ml_collections.ConfigDict(dict(name="gpt2", width=128, depth=4, num_heads=4, bias=False,
                                             gelu_approximate=False, position_std=0.02, dropout=0.0,
                                             scan_unroll=True))
    if smoke:
        c.data.context = 16
        c.batch_size, c.eval_batch_size = 4, 8
        c.max_steps = 6
        c.optim.update(dict(warmup_steps=2, warmup_lr=LR / 3))
        c.model.update(dict(width=32, depth=2, num_heads=2))
    return c
