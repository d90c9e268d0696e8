"""As-ViT topology search (paper §3.3): REINFORCE over the genotype positions, rewarded by training-free
proxies (official `search/reinforce.py` and `TEG`). Writes each step to `search_steps.jsonl`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from learngene_jax import logs
from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.asvit.genotype import SEARCH_SPACE, from_choices
from learngene_jax.methods.asvit.proxies import ProxyEvaluator, ProxyScores, architecture_record

Array = jax.Array
STEPS_FILE = "search_steps.jsonl"
RESULT_FILE = "search_result.json"


def init_policy(key: Array) -> list[Array]:
    """One logit vector per genotype position, 1e-3·N(0, 1) as the official `Policy`."""
    keys = jax.random.split(key, len(SEARCH_SPACE))
    return [1e-3 * jax.random.normal(k, (len(choices),)) for k, (_, choices) in zip(keys, SEARCH_SPACE, strict=True)]


def sample_actions(logits: list[Array], key: Array) -> list[int]:
    """One choice index per independent categorical."""
    keys = jax.random.split(key, len(logits))
    return [int(jax.random.categorical(k, lg)) for k, lg in zip(keys, logits, strict=True)]


def log_prob(logits: list[Array], actions: Array) -> Array:
    """log π(actions): the sum of the categoricals' log-probabilities."""
    return sum(jax.nn.log_softmax(lg)[a] for lg, a in zip(logits, actions, strict=True))


def entropy(logits: list[Array]) -> float:
    """Sum of the categoricals' entropies."""
    return float(sum(-(jax.nn.softmax(lg) * jax.nn.log_softmax(lg)).sum() for lg in logits))


def derive(logits: list[Array]) -> list[int]:
    """The answer: argmax of each categorical."""
    return [int(jnp.argmax(lg)) for lg in logits]


class Baseline:
    """Bias-corrected exponential moving average of rewards (official `ExponentialMovingAverage`)."""

    def __init__(self, momentum: float) -> None:
        self.momentum, self.numerator, self.denominator = momentum, 0.0, 0.0

    def update(self, value: float) -> None:
        """Fold in one reward."""
        self.numerator = self.momentum * self.numerator + (1 - self.momentum) * value
        self.denominator = self.momentum * self.denominator + (1 - self.momentum)

    @property
    def value(self) -> float:
        """The current average."""
        return self.numerator / self.denominator


class RewardBuffer:
    """Proxy history and the reward −Δ̂κ + Δ̂(length distortion) of the latest sample (official `TEG`).

    Δ̂ is the change from the previous sample divided by the range over the last `size` samples (+1e-6).
    A bad κ counts as the worst good κ seen so far (also when a later one is worse, as the official
    `_update_bad_cases` intends); a non-finite length distortion likewise as the smallest good one. Deliberate
    difference: the official TEG overwrites its `bad` flag in the length-distortion step, so a NaN κ there is
    scored as −1, the best value.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.ntk: list[float] = []
        self.length: list[float] = []

    @staticmethod
    def _filled(values: list[float], worst) -> list[float] | None:
        good = [v for v in values if math.isfinite(v)]
        if not good:
            return None
        return [v if math.isfinite(v) else worst(good) for v in values]

    def _change(self, values: list[float]) -> float:
        window = values[-self.size:]
        return (values[-1] - values[-2]) / (max(window) - min(window) + 1e-6)

    def push(self, scores: ProxyScores) -> float:
        """Record one architecture's scores and return its reward (0 for the first sample)."""
        self.ntk.append(scores.ntk if math.isfinite(scores.ntk) else math.inf)
        self.length.append(scores.length if math.isfinite(scores.length) else -math.inf)
        ntk, length = self._filled(self.ntk, max), self._filled(self.length, min)
        if len(self.ntk) < 2 or ntk is None or length is None:
            return 0.0
        return -self._change(ntk) + self._change(length)


def _policy_update(optimizer: optax.GradientTransformation):
    @jax.jit
    def update(logits, opt_state, actions, advantage):
        grads = jax.grad(lambda lg: -log_prob(lg, actions) * advantage)(logits)
        updates, opt_state = optimizer.update(grads, opt_state, logits)
        return optax.apply_updates(logits, updates), opt_state

    return update


def _check(config: ml_collections.ConfigDict) -> None:
    if config.steps < 1:
        fail(ConfigError, f"steps must be >= 1, got {config.steps}")
    if not 0 <= config.ema_momentum < 1:
        fail(ConfigError, f"ema_momentum must be in [0, 1), got {config.ema_momentum}")
    if config.buffer_size < 2:
        fail(ConfigError, f"buffer_size must be >= 2, got {config.buffer_size}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run the REINFORCE topology search; write steps and the derived genotype under `workdir`."""
    _check(config)
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    key_policy, key_steps = jax.random.split(jax.random.key(config.seed))
    evaluator = ProxyEvaluator(config.proxy, config.data.name, config.seed)
    logits = init_policy(key_policy)
    optimizer = optax.adam(config.learning_rate)  # torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8
    opt_state = optimizer.init(logits)
    update = _policy_update(optimizer)
    baseline, buffer = Baseline(config.ema_momentum), RewardBuffer(config.buffer_size)
    budget = float(config.time_budget_s)
    steps_done = 0
    with open(out / STEPS_FILE, "w") as log:
        for step in range(config.steps):
            if budget and time.perf_counter() - start >= budget:
                logs.info(f"time budget of {budget:.0f}s spent after {step} steps")
                break
            key_sample, key_init = jax.random.split(jax.random.fold_in(key_steps, step))
            actions = sample_actions(logits, key_sample)
            genotype = from_choices(actions)
            step_start, step_cpu = time.perf_counter(), time.process_time()
            scores = evaluator(genotype, key_init)
            reward = buffer.push(scores)
            baseline.update(reward)
            advantage = reward - baseline.value
            logits, opt_state = update(logits, opt_state, jnp.asarray(actions), advantage)
            record = {"step": step, **architecture_record(genotype, scores, config.count_image_size),
                      "reward": reward, "baseline": baseline.value, "entropy": entropy(logits),
                      "seconds": time.perf_counter() - step_start, "cpu_seconds": time.process_time() - step_cpu,
                      "elapsed": time.perf_counter() - start}
            log.write(json.dumps(record) + "\n")
            log.flush()
            steps_done = step + 1
            logs.info(f"step {step:4d} | {record['genotype']:<26} | params {record['params'] / 1e6:.2f}M | "
                      f"MACs {record['macs'] / 1e9:.3f}G | NTK {scores.ntk:.2f} | LD {scores.length:.4f} | "
                      f"reward {reward:+.3f} | entropy {record['entropy']:.2f} | {record['seconds']:.1f}s")
    answer = from_choices(derive(logits))
    final_scores = evaluator(answer, jax.random.fold_in(key_steps, config.steps))
    result = {**architecture_record(answer, final_scores, config.count_image_size), "steps": steps_done,
              "wall_seconds": time.perf_counter() - start,
              "probabilities": [np.asarray(jax.nn.softmax(lg)).round(4).tolist() for lg in logits],
              "config": config.to_dict()}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    logs.info(f"[policy] {result['genotype']} | params {result['params'] / 1e6:.2f}M | "
              f"MACs {result['macs'] / 1e9:.3f}G | NTK {final_scores.ntk:.2f} | LD {final_scores.length:.4f} | "
              f"{steps_done} steps in {result['wall_seconds']:.0f}s")
    return result
