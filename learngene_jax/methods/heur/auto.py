"""Auto Learngene (arXiv 2305.02279): choose the gene blocks of the ancestor automatically.

Default criterion, `pseudo_descendant` (the paper's "Learngene Condensing: identify which layers among the
ancestry model have the most similarity as one pseudo descendant model"): a pseudo descendant — a fresh model of
the descendants' architecture — is trained on a source task while matching the ancestor's block features, with
the amount it takes from each (ancestor block m, pseudo-descendant block n) pair meta-learned as in L2T-ww
(Jang et al., "Learning What and Where to Transfer", ICML 2019; alinlab/L2T-ww `train_l2t_ww.py`):

  L_wfm = β Σ_{m,n} mean_x λ^{m,n}(x) Σ_c w_c^{m,n}(x) mean_{hw} (S^m(x) − r^{m,n}(T^n(x)))²_{c,h,w}

S^m the ancestor's block-m output resized (bilinear) to T^n's grid, T^n the pseudo descendant's block n, r a
1×1 conv (T^n's channels → S^m's), w = softmax(Linear(GAP S^m)) (zero init: uniform) and λ = relu6(Linear(GAP
S^m)) (bias 1) the meta-networks φ. Each step trains the pseudo descendant on CE + L_wfm, then updates φ by the
gradient of CE after T matching-only SGD steps and one CE step (unrolled, second order; the trial steps are
discarded). The score of ancestor block m is Σ_n E_x λ^{m,n}(x) — how much the pseudo descendant chose to be
like it — and the gene is the window of `n` consecutive blocks with the largest summed score. The full paper
text was not available offline when this was written: the L2T-ww form of "most similarity" is this port's
reading (see docs/methods/heur-auto.md, Deviations from the official code).

Alternatives kept, named for what they are — an automation of the Heur appendix's stable-gradient idea (the
blocks that change least while the ancestor keeps learning are taken to hold its most general knowledge):

per block l of the ancestor (K_l its conv kernel, tasks t = 1..T-1 of the continual sequence;
the first task starts from random weights and says nothing about kept knowledge, so it is left out):

  statistic 'weights':   Δ_l(t) = ‖K_l^end(t) − K_l^start(t)‖_F / ‖K_l^start(t)‖_F
  statistic 'gradients': G_l(t) = ‖∇_{K_l} L_t(θ^start(t))‖_F / ‖K_l^start(t)‖_F

where θ^start(t) is what task t starts from (the Net2Wider-widened end of task t−1, with a fresh head) and
θ^end(t) what it ends with. Because widening preserves the function, Δ_l(t) is the change from task t−1's
knowledge to task t's with the widening itself not counted (both sides have the widened shape), and new channels
are compared with the copies they started as. L_t is task t's mean cross-entropy over its training images,
BatchNorm in train mode (as training sees it). The score of a block is the mean over t; the gene is the window
of `n` consecutive blocks (a descendant stacks them) with the smallest summed score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax import logs
from learngene_jax.errors import ConfigError, fail
from learngene_jax.objectives.losses import cross_entropy

STATISTICS = ("pseudo_descendant", "weights", "gradients")
LEAST_CHANGE = ("weights", "gradients")  # the least-change statistics: lower is better
LAMBDA_INITS = ("zero", "torch")  # the pair-weight kernel's init (init_matching)
SCHEDULES = ("cosine", "constant")  # the pseudo descendant's lr schedule (pseudo_descendant_scores)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(ConfigError, f"auto.{key} must be one of {choices}, got {value!r}")



def _kernels(params: dict[str, Any], num_blocks: int) -> list[np.ndarray]:
    return [np.asarray(params[f"block{i}"]["conv"]["kernel"], np.float64) for i in range(num_blocks)]


def relative_change(start: dict[str, Any], end: dict[str, Any], num_blocks: int) -> np.ndarray:
    """Δ_l = ‖K_l^end − K_l^start‖_F / ‖K_l^start‖_F per block (params trees of the same widened ancestor)."""
    out = []
    for a, b in zip(_kernels(start, num_blocks), _kernels(end, num_blocks), strict=True):
        if a.shape != b.shape:
            fail(ConfigError, f"relative change needs same-shaped kernels (compare a task's start with its end), "
                              f"got {a.shape} and {b.shape}")
        out.append(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12))
    return np.asarray(out)


def relative_gradient(model: nn.Module, variables: dict[str, Any], batches: Iterable[tuple[Any, Any]],
                      num_blocks: int, rng: jax.Array | None = None) -> np.ndarray:
    """G_l = ‖∇_{K_l} L‖_F / ‖K_l‖_F per block, L the mean cross-entropy over `batches` of (images, labels)
    in train mode as training sees it: BatchNorm on batch statistics and dropout on, its masks drawn from `rng`
    (default key 0; batch i uses fold_in(rng, i)); the gradient of each batch is weighted by its size."""
    rest = {k: v for k, v in variables.items() if k != "params"}
    rng = jax.random.key(0) if rng is None else rng

    @jax.jit
    def batch_grad(params, images, labels, key):
        def loss(p):
            logits, _ = model.apply({"params": p, **rest}, images, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": key})
            return jnp.sum(cross_entropy(logits, labels))
        return jax.grad(loss)(params)

    total, count = None, 0
    for i, (images, labels) in enumerate(batches):
        grads = batch_grad(variables["params"], jnp.asarray(images), jnp.asarray(labels), jax.random.fold_in(rng, i))
        total = grads if total is None else jax.tree_util.tree_map(jnp.add, total, grads)
        count += len(labels)
    if not count:
        fail(ConfigError, "relative_gradient needs at least one batch of examples")
    grads = _kernels(jax.tree_util.tree_map(lambda g: g / count, jax.device_get(total)), num_blocks)
    return np.asarray([np.linalg.norm(g) / max(np.linalg.norm(k), 1e-12)
                       for g, k in zip(grads, _kernels(variables["params"], num_blocks), strict=True)])


def check_settings(a: Any) -> None:
    """The `auto` section of a config, checked before anything trains: one ConfigError naming the bad key."""
    _check_choice("statistic", a.statistic, STATISTICS)
    if a.statistic != "pseudo_descendant":
        return
    rules = [("epochs", a.epochs >= 1, "at least 1"), ("batch_size", a.batch_size >= 1, "at least 1"),
             ("lr", a.lr > 0, "positive"), ("momentum", 0 <= a.momentum < 1, "in [0, 1)"),
             ("weight_decay", a.weight_decay >= 0, "non-negative"),
             ("meta_lr", a.meta_lr >= 0, "non-negative (0 switches the meta step off: the control run)"),
             ("meta_weight_decay", a.meta_weight_decay >= 0, "non-negative"), ("beta", a.beta >= 0, "non-negative"),
             ("inner_steps", a.inner_steps >= 1 or a.meta_lr == 0,
              "at least 1 when the meta step is on (the trial steps are its only path from λ to the outcome)"),
             ("crop_padding", a.crop_padding >= 0, "non-negative (0: no pad-and-crop)")]
    for key, ok, want in rules:
        if not ok:
            fail(ConfigError, f"auto.{key} must be {want}, got {a[key]!r}")
    _check_choice("schedule", a.schedule, SCHEDULES)
    _check_choice("lambda_init", a.lambda_init, LAMBDA_INITS)


def select_blocks(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The `n` consecutive blocks with the smallest summed score (the earliest window on a tie)."""
    scores = np.asarray(scores, np.float64)
    if not 1 <= n <= len(scores):
        fail(ConfigError, f"auto.layers must be in 1..{len(scores)} (the ancestor's blocks), got {n}")
    sums = np.convolve(scores, np.ones(n), mode="valid")  # sums[s] = scores[s] + ... + scores[s + n - 1]
    start = int(np.argmin(sums))
    return tuple(range(start, start + n))


def select_most(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The `n` consecutive blocks with the largest summed score (the earliest window on a tie)."""
    return select_blocks(-np.asarray(scores, np.float64), n)


def least_changing(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The `n` individually least-changing blocks, in block order (reported next to the chosen window)."""
    return tuple(sorted(int(i) for i in np.argsort(np.asarray(scores), kind="stable")[:n]))


# -- the pseudo-descendant criterion (L2T-ww meta-learned matching weights) ------------------------------------

def block_features(model: nn.Module, variables: dict[str, Any], images: jax.Array, names: Sequence[str],
                   train: bool, rng: jax.Array | None = None) -> tuple[jax.Array, list[jax.Array], dict[str, Any]]:
    """(logits, [output of each submodule in `names`, in that order], updated batch_stats) of one forward pass;
    `train` runs BatchNorm on batch statistics (and dropout with `rng`)."""
    wanted = set(names)
    logits, state = model.apply(variables, images, train=train, mutable=["batch_stats", "intermediates"],
                                capture_intermediates=lambda mdl, method: method == "__call__" and mdl.name in wanted,
                                rngs={"dropout": rng if rng is not None else jax.random.key(0)})
    inter = state["intermediates"]
    return logits, [inter[n]["__call__"][0] for n in names], state.get("batch_stats", {})


def _resize(x: jax.Array, hw: tuple[int, ...]) -> jax.Array:
    if x.shape[1:3] == tuple(hw):
        return x
    return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), "linear", antialias=False)


def _pad(x: jax.Array, channels: int) -> jax.Array:
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, channels - x.shape[-1])])


def grid_groups(target_grids: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Target blocks grouped by their spatial grid (first-seen order): every pair of a group is computed in one
    batched einsum (one XLA op per group instead of one per pair, which keeps the unrolled meta step compilable)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for n, hw in enumerate(target_grids):
        groups.setdefault(tuple(hw), []).append(n)
    return list(groups.values())


def init_matching(key: jax.Array, source_channels: Sequence[int], target_channels: Sequence[int],
                  groups: Sequence[Sequence[int]], loss_weight_init: float = 1.0,
                  lambda_init: str = "zero") -> tuple[dict, dict]:
    """(match, meta) params for every (source block m, target block n) pair, stored per target group g as
    zero-padded stacks over (m, n), initialised as L2T-ww's PyTorch modules are but for the λ kernel: the 1×1 convs r
    `match['match'][g]` {'kernel': (M, N_g, C_t, C_s), 'bias': (M, N_g, C_s)} with torch's Conv2d default, kernel
    and bias U(±1/√C_t) of each pair's real channels; the channel-weight nets `meta['channel'][g]` zero (uniform
    softmax, L2T-ww `WeightNetwork`); the pair-weight nets `meta['pair'][g]` {'kernel': (M, N_g, C_s), 'bias':
    (M, N_g)} with the bias set to `loss_weight_init` (L2T-ww `LossWeightNetwork`, `--loss-weight-init 1.0`) and
    the kernel zero (`lambda_init='zero'`: every λ starts at relu6(bias) = 1, so the meta step alone tells pairs
    apart) or torch's Linear default U(±1/√C_s) (`'torch'`, L2T-ww's: on post-ReLU features, whose pooled means
    are positive, some λ start at or near 0 where relu6 has no gradient, and stay there whatever the evidence);
    C_s, C_t the largest channel counts. Raises ConfigError for another `lambda_init`."""
    _check_choice("lambda_init", lambda_init, LAMBDA_INITS)
    cs, num = max(source_channels), len(source_channels)
    src_mask = np.arange(cs)[None] < np.asarray(source_channels)[:, None]  # (M, C_s)
    src_bound = (1.0 / np.sqrt(np.asarray(source_channels)))[:, None, None]  # (M, 1, 1)
    match, meta = {"match": []}, {"channel": [], "pair": []}
    for g, idx in enumerate(groups):
        ct = max(target_channels[n] for n in idx)
        tgt_channels = np.asarray([target_channels[n] for n in idx])
        tgt_mask = np.arange(ct)[None] < tgt_channels[:, None]  # (N_g, C_t)
        bound = 1.0 / np.sqrt(tgt_channels)  # (N_g,)
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, g), 3)
        kernel = np.array(jax.random.uniform(k1, (num, len(idx), ct, cs), minval=-1.0, maxval=1.0))
        kernel *= bound[None, :, None, None] * (tgt_mask[None, :, :, None] & src_mask[:, None, None, :])
        bias = np.array(jax.random.uniform(k2, (num, len(idx), cs), minval=-1.0, maxval=1.0))
        bias *= bound[None, :, None] * src_mask[:, None, :]
        pair = np.array(jax.random.uniform(k3, (num, len(idx), cs), minval=-1.0, maxval=1.0))
        pair *= src_bound * src_mask[:, None, :] * (lambda_init == "torch")
        match["match"].append({"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)})
        meta["channel"].append({"kernel": jnp.zeros((num, len(idx), cs, cs), jnp.float32),
                                "bias": jnp.zeros((num, len(idx), cs), jnp.float32)})
        meta["pair"].append({"kernel": jnp.asarray(pair, jnp.float32),
                             "bias": jnp.full((num, len(idx)), loss_weight_init, jnp.float32)})
    return match, meta


def _pooled(source: Sequence[jax.Array], cs: int) -> jax.Array:
    """GAP of every source block, zero-padded: (M, batch, C_s)."""
    return jnp.stack([_pad(jnp.mean(s.astype(jnp.float32), axis=(1, 2)), cs) for s in source])


def pair_weights(meta: dict[str, Any], source: Sequence[jax.Array], groups: Sequence[Sequence[int]]) -> jax.Array:
    """λ^{m,n}(x) = relu6(Linear(GAP S^m(x))) for every pair: (M, N, batch), N in target-block order."""
    pooled = jax.lax.stop_gradient(_pooled(source, meta["pair"][0]["kernel"].shape[-1]))
    out: dict[int, jax.Array] = {}
    for g, idx in enumerate(groups):
        lam = jax.nn.relu6(jnp.einsum("mbs,mns->mnb", pooled, meta["pair"][g]["kernel"])
                           + meta["pair"][g]["bias"][:, :, None])
        out.update({n: lam[:, i] for i, n in enumerate(idx)})
    return jnp.stack([out[n] for n in sorted(out)], axis=1)


def matching_loss(match: dict[str, Any], meta: dict[str, Any], source: Sequence[jax.Array],
                  target: Sequence[jax.Array], groups: Sequence[Sequence[int]], beta: float) -> jax.Array:
    """L_wfm (module docstring) over every (source block, target block) pair, for feature lists `source`
    (ancestor blocks) and `target` (pseudo descendant), each (batch, H, W, C); the source is a constant (no
    gradient flows into the ancestor). Padded channels carry no loss: the channel softmax is masked to each
    source block's real channels, and padded target channels are zero."""
    cs = meta["pair"][0]["kernel"].shape[-1]
    source = [jax.lax.stop_gradient(s.astype(jnp.float32)) for s in source]
    pooled = _pooled(source, cs)
    src_mask = jnp.stack([jnp.arange(cs) < s.shape[-1] for s in source])  # (M, C_s)
    lam = pair_weights(meta, source, groups)
    total = jnp.zeros((), jnp.float32)
    for g, idx in enumerate(groups):
        hw = target[idx[0]].shape[1:3]
        ct = match["match"][g]["kernel"].shape[2]
        s = jnp.stack([_pad(_resize(x, hw), cs) for x in source])  # (M, B, h, w, C_s)
        t = jnp.stack([_pad(target[n].astype(jnp.float32), ct) for n in idx])  # (N_g, B, h, w, C_t)
        r = jnp.einsum("nbhwt,mnts->mnbhws", t, match["match"][g]["kernel"]) + match["match"][g]["bias"][
            :, :, None, None, None]
        diff = jnp.mean((s[:, None] - r) ** 2, axis=(3, 4))  # (M, N_g, B, C_s)
        logits = jnp.einsum("mbs,mnsd->mnbd", pooled, meta["channel"][g]["kernel"]) + meta["channel"][g]["bias"][
            :, :, None]
        w = jax.nn.softmax(jnp.where(src_mask[:, None, None], logits, -jnp.inf), axis=-1)
        per_pair = jnp.mean(jnp.sum(jnp.where(src_mask[:, None, None], w * diff, 0.0), -1) * lam[:, idx], -1)
        total = total + jnp.sum(per_pair)
    return beta * total


def epoch_cosine(lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (0-based) of `epochs` under L2T-ww's per-epoch cosine (`CosineAnnealingLR(opt,
    epochs)` stepped at the start of each epoch, minimum 0): lr·(1 + cos(π·epoch/epochs))/2."""
    return float(lr * 0.5 * (1.0 + np.cos(np.pi * epoch / epochs)))


def crop_and_flip(images: np.ndarray, rng: np.random.Generator, padding: int, flip: bool,
                  pad_value: np.ndarray | float = 0.0) -> np.ndarray:
    """L2T-ww's small-image training transform on a batch (N, H, W, C): pad by `padding` pixels of `pad_value` (a
    black border: the normalised value of 0), take a random H×W crop per image, and mirror half of them (`flip`)."""
    if padding <= 0 and not flip:
        return images
    n, h, w, _ = images.shape
    out = images
    if padding > 0:
        padded = np.empty((n, h + 2 * padding, w + 2 * padding, images.shape[-1]), images.dtype)
        padded[...] = np.asarray(pad_value, images.dtype)
        padded[:, padding:padding + h, padding:padding + w] = images
        dy, dx = rng.integers(0, 2 * padding + 1, size=(2, n))
        out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mirror = rng.random(n) < 0.5
        out = np.where(mirror[:, None, None, None], out[:, :, ::-1], out)
    return out


def pseudo_descendant_scores(ancestor: nn.Module, ancestor_variables: dict[str, Any], ancestor_blocks: Sequence[str],
                             pseudo: nn.Module, pseudo_variables: dict[str, Any], pseudo_blocks: Sequence[str],
                             images: np.ndarray, labels: np.ndarray, *, epochs: int, batch_size: int, lr: float,
                             momentum: float = 0.9, weight_decay: float = 1e-4, schedule: str = "cosine",
                             meta_lr: float = 1e-2, meta_weight_decay: float = 1e-4, inner_steps: int = 2,
                             beta: float = 0.5, crop_padding: int = 0, flip: bool = False,
                             pad_value: np.ndarray | float = 0.0, lambda_init: str = "zero",
                             seed: int = 0) -> dict[str, Any]:
    """Train the pseudo descendant on (images (N, H, W, C) normalised, labels (N,)) with CE + L_wfm against every
    (ancestor block, pseudo block) pair, meta-learning λ and w (module docstring), as L2T-ww's `train_l2t_ww.py`:
    SGD with momentum and coupled weight decay for the pseudo descendant and its 1×1 convs at `lr` under a
    per-epoch cosine (`schedule='cosine'`, or 'constant'), each batch augmented by `crop_and_flip`, and after
    every step a meta step — `inner_steps` matching-only trial steps and one CE step taken with the same SGD
    (momentum and decay included, as its `MetaSGD`), the CE after them differentiated through the steps, Adam
    with coupled L2 `meta_weight_decay` on the meta-networks; the trial steps are then discarded.
    `meta_lr=0` switches the meta step off (λ and w stay at their init: the control). `lambda_init`: see
    `init_matching`.

    Returns {'scores': (M,) Σ_n E_x λ^{m,n} with the final meta-networks, 'pair_weights': (M, N) E_x λ^{m,n},
    'scores_init' / 'pair_weights_init': the same with the meta-networks at their init — what the run selects
    with the meta step off, since λ reads only the (fixed) ancestor's features (under `lambda_init='zero'` every
    block ties and the earliest window wins) —, 'lambda_shift': mean over pairs
    of |E_x λ − E_x λ_init|, 'top1': the pseudo descendant's training accuracy, 'ce': its last-epoch mean CE}; all
    expectations over the unaugmented `images`. Raises ConfigError when there are fewer images than one batch or
    the schedule is unknown."""
    import optax  # noqa: PLC0415 - only this criterion trains anything here

    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    steps_per_epoch = len(images) // batch_size
    if epochs < 1:
        fail(ConfigError, f"the pseudo descendant needs at least one epoch, got auto.epochs={epochs}")
    if steps_per_epoch < 1:
        fail(ConfigError, f"the pseudo descendant needs at least one batch of {batch_size} images, got "
                          f"{len(images)} images (lower auto.batch_size)")
    _check_choice("schedule", schedule, SCHEDULES)
    key = jax.random.key(seed)
    anc_vars = jax.tree_util.tree_map(jnp.asarray, ancestor_variables)
    sample = jnp.asarray(images[:1])
    _, src0, _ = block_features(ancestor, anc_vars, sample, ancestor_blocks, train=False)
    _, tgt0, _ = block_features(pseudo, pseudo_variables, sample, pseudo_blocks, train=False)
    groups = grid_groups([f.shape[1:3] for f in tgt0])
    match, meta = init_matching(jax.random.fold_in(key, 1), [f.shape[-1] for f in src0], [f.shape[-1] for f in tgt0],
                                groups, lambda_init=lambda_init)
    meta_init = meta
    theta = {"model": pseudo_variables["params"], **match}
    stats = pseudo_variables.get("batch_stats", {})
    # torch SGD: d = g + wd·p; buf = μ·buf + d; p -= lr·buf (the lr is applied by `sgd_step`, so it can change)
    opt = optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum))
    meta_opt = optax.chain(optax.add_decayed_weights(meta_weight_decay), optax.adam(meta_lr))
    opt_state, meta_state = opt.init(theta), meta_opt.init(meta)

    def sgd_step(th, opt_state, grads, step_lr):
        direction, opt_state = opt.update(grads, opt_state, th)
        return jax.tree_util.tree_map(lambda p, d: p - step_lr * d, th, direction), opt_state

    def forward(th, stats, x, rng):
        return block_features(pseudo, {"params": th["model"], "batch_stats": stats}, x, pseudo_blocks, True, rng)

    def ancestor_features(x):
        return block_features(ancestor, anc_vars, x, ancestor_blocks, train=False)[1]

    def ce_of(logits, y):
        return jnp.mean(cross_entropy(logits, y))

    @jax.jit
    def train_step(th, stats, opt_state, meta, x, y, rng, step_lr):
        src = ancestor_features(x)

        def loss(th):
            logits, tgt, new_stats = forward(th, stats, x, rng)
            ce = ce_of(logits, y)
            return ce + matching_loss(th, meta, src, tgt, groups, beta), (new_stats, ce)

        (_, (new_stats, ce)), grads = jax.value_and_grad(loss, has_aux=True)(th)
        th, opt_state = sgd_step(th, opt_state, grads, step_lr)
        return th, new_stats, opt_state, ce

    @jax.jit
    def meta_step(th, stats, opt_state, meta, meta_state, x, y, rng, step_lr):
        src = ancestor_features(x)

        def outer(meta):
            trial, state = th, opt_state
            for _ in range(inner_steps):  # matching-only trial steps: the only path from φ to the outcome
                g = jax.grad(lambda t: matching_loss(t, meta, src, forward(t, stats, x, rng)[1], groups, beta))(trial)
                trial, state = sgd_step(trial, state, g, step_lr)
            g = jax.grad(lambda t: ce_of(forward(t, stats, x, rng)[0], y))(trial)
            trial, _ = sgd_step(trial, state, g, step_lr)
            return ce_of(forward(trial, stats, x, rng)[0], y)

        grads = jax.grad(outer)(meta)
        updates, meta_state = meta_opt.update(grads, meta_state, meta)
        return optax.apply_updates(meta, updates), meta_state

    rng = np.random.default_rng(seed)
    ces = []
    for epoch in range(epochs):
        step_lr = jnp.float32(epoch_cosine(lr, epoch, epochs) if schedule == "cosine" else lr)
        order = rng.permutation(len(images))
        ces = []
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = jnp.asarray(crop_and_flip(images[idx], rng, crop_padding, flip, pad_value))
            y = jnp.asarray(labels[idx])
            k = jax.random.fold_in(key, epoch * steps_per_epoch + step)
            theta, stats, opt_state, ce = train_step(theta, stats, opt_state, meta, x, y, k, step_lr)
            if meta_lr > 0:
                meta, meta_state = meta_step(theta, stats, opt_state, meta, meta_state, x, y, k, step_lr)
            ces.append(ce)
        ce = float(np.mean(jax.device_get(ces)))
        logs.info(f"[pseudo_descendant] epoch {epoch + 1}/{epochs}: lr {float(step_lr):.4g}, train CE {ce:.4f}")
        if not np.isfinite(ce):
            fail(ConfigError, f"the pseudo descendant diverged (train CE {ce} in epoch {epoch + 1}): lower auto.lr "
                              f"(now {lr}) or auto.beta (now {beta})")

    @jax.jit
    def weights_and_hits(x, y):
        src = ancestor_features(x)
        logits = pseudo.apply({"params": theta["model"], "batch_stats": stats}, x, train=False)
        return (jnp.sum(pair_weights(meta, src, groups), axis=-1),
                jnp.sum(pair_weights(meta_init, src, groups), axis=-1), jnp.sum(jnp.argmax(logits, -1) == y))

    shape = (len(ancestor_blocks), len(pseudo_blocks))
    lam_sum, lam_init_sum, hits = np.zeros(shape), np.zeros(shape), 0
    for start in range(0, len(images), batch_size):
        a, a0, b = weights_and_hits(jnp.asarray(images[start:start + batch_size]),
                                    jnp.asarray(labels[start:start + batch_size]))
        lam_sum += np.asarray(a, np.float64)
        lam_init_sum += np.asarray(a0, np.float64)
        hits += int(b)
    weights, weights_init = lam_sum / len(images), lam_init_sum / len(images)
    return {"scores": weights.sum(1), "pair_weights": weights, "scores_init": weights_init.sum(1),
            "pair_weights_init": weights_init, "lambda_shift": float(np.mean(np.abs(weights - weights_init))),
            "top1": hits / len(images), "ce": float(np.mean(jax.device_get(ces)))}
