"""As-ViT scaling (paper §3.4): grow a seed topology layer by layer, choosing each step by proxy ranks on a
narrow network (official `search/grow.py`). Writes each step to `grow_steps.jsonl`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from learngene_jax import logs
from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.asvit.genotype import Genotype, format_genotype, parse_genotype
from learngene_jax.methods.asvit.model import from_genotype, mac_count, param_count
from learngene_jax.methods.asvit.proxies import ProxyEvaluator, ProxyScores, architecture_record

STEPS_FILE = "grow_steps.jsonl"
RESULT_FILE = "grow_result.json"
Candidate = tuple[tuple[int, ...], int]  # (layers per stage, proxy width)


def grow_candidates(depths: tuple[int, ...], width: int, ratios: tuple[float, ...]) -> list[Candidate]:
    """One more layer in one stage, each combined with every widening round(width·(1 + r)).

    As the official `grow_step`: widths that round to the previous choice are skipped (Python's round, ties to
    even), so at small widths some steps do not widen.
    """
    widths: list[int] = []
    for ratio in ratios:
        w = round(width * (1 + ratio))
        if not widths or w != widths[-1]:
            widths.append(w)
    deeper = [tuple(d + (i == s) for i, d in enumerate(depths)) for s in range(len(depths))]
    return [(d, w) for d in deeper for w in widths]


def dense_ranks(values: list[float], descending: bool) -> list[int]:
    """Rank of each value, equal values sharing a rank and the next distinct value one higher (official)."""
    distinct = sorted(set(values), reverse=descending)
    position = {v: i for i, v in enumerate(distinct)}
    return [position[v] for v in values]


def choose(scores: list[ProxyScores]) -> int:
    """Index of the candidate with the smallest rank sum (κ ascending, length distortion descending).

    Candidates with a bad score are ranked only when all are bad. Ties: the official compares the first two
    tied candidates by argmin of the criterion with the larger relative range (max − min)/max, argmin even for
    length distortion; here every tied candidate is compared and the better value wins (lower κ, higher LD).
    """
    good = [i for i, s in enumerate(scores) if not (s.ntk_bad or s.length_bad)] or list(range(len(scores)))
    ntk = [scores[i].ntk if math.isfinite(scores[i].ntk) else math.inf for i in good]
    length = [scores[i].length if math.isfinite(scores[i].length) else -math.inf for i in good]
    sums = [a + b for a, b in zip(dense_ranks(ntk, False), dense_ranks(length, True), strict=True)]
    tied = [j for j, s in enumerate(sums) if s == min(sums)]
    if len(tied) > 1:
        def relative_range(values: list[float]) -> float:
            finite = [v for v in values if math.isfinite(v)]
            return (max(finite) - min(finite)) / max(finite) if finite and max(finite) > 0 else 0.0

        if relative_range(ntk) >= relative_range(length):
            tied = [min(tied, key=lambda j: ntk[j])]
        else:
            tied = [max(tied, key=lambda j: length[j])]
    return good[tied[0]]


def _check(config: ml_collections.ConfigDict) -> Genotype:
    genotype = parse_genotype(config.arch)
    if config.proxy_width < 1 or config.width_scale < 1:
        fail(ConfigError, f"proxy_width and width_scale must be >= 1, got {config.proxy_width}, {config.width_scale}")
    if not config.width_ratios or min(config.width_ratios) < 0:
        fail(ConfigError, f"width_ratios must be non-negative fractions, got {tuple(config.width_ratios)}")
    if config.param_stop_m > config.param_limit_m:
        fail(ConfigError, f"param_stop_m {config.param_stop_m} exceeds param_limit_m {config.param_limit_m}")
    return genotype


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Grow `config.arch` from one layer per stage until it reaches `param_stop_m` M params; write the series."""
    seed_genotype = _check(config)
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evaluator = ProxyEvaluator(config.proxy, config.data.name, config.seed)
    key = jax.random.key(config.seed)
    depths, width = (1,) * len(seed_genotype.depths), int(config.proxy_width)
    series: list[dict[str, Any]] = []
    budget, stopped = float(config.time_budget_s), "max_steps"
    with open(out / STEPS_FILE, "w") as log:
        for step in range(config.max_steps):
            if budget and time.perf_counter() - start >= budget:
                stopped = "time_budget"
                break
            step_start, step_cpu = time.perf_counter(), time.process_time()
            scored: list[tuple[Genotype, dict[str, Any], ProxyScores]] = []
            dropped = []
            for i, (cand_depths, cand_width) in enumerate(grow_candidates(depths, width, tuple(config.width_ratios))):
                # Params and MACs of the real network (width × width_scale); proxies on the narrow one.
                real = seed_genotype.replace(depths=cand_depths, width=cand_width * config.width_scale)
                model = from_genotype(real, image_size=config.count_image_size)
                params, macs = param_count(model), mac_count(model)
                if params > config.param_limit_m * 1e6:
                    dropped.append(format_genotype(real, full=True))
                    continue
                proxy = seed_genotype.replace(depths=cand_depths, width=cand_width)
                scores = evaluator(proxy, jax.random.fold_in(jax.random.fold_in(key, step), i))
                scored.append((real, {**architecture_record(proxy, scores, config.count_image_size),
                                      "genotype": format_genotype(real, full=True), "params": params, "macs": macs,
                                      "proxy_genotype": format_genotype(proxy, full=True)}, scores))
            if not scored:
                stopped = "param_limit"
                break
            best = choose([s for _, _, s in scored])
            real, record, scores = scored[best]
            depths, width = real.depths, real.width // config.width_scale
            entry = {"step": step, **record, "seconds": time.perf_counter() - step_start,
                     "cpu_seconds": time.process_time() - step_cpu, "elapsed": time.perf_counter() - start}
            series.append(entry)
            log.write(json.dumps({**entry, "candidates": [r for _, r, _ in scored], "dropped": dropped}) + "\n")
            log.flush()
            logs.info(f"grow {step:3d} | {record['genotype']:<40} | params {record['params'] / 1e6:6.2f}M | "
                      f"MACs {record['macs'] / 1e9:6.2f}G | NTK {scores.ntk:.2f} | LD {scores.length:.4f} | "
                      f"{len(scored)} candidates | "
                      f"{entry['seconds']:.0f}s")
            if record["params"] >= config.param_stop_m * 1e6:
                stopped = "param_stop"
                break
    result = {"series": [{k: e[k] for k in ("step", "genotype", "params", "macs", "ntk", "length_distortion")}
                         for e in series],
              "final": series[-1]["genotype"] if series else None, "stopped": stopped,
              "wall_seconds": time.perf_counter() - start, "config": config.to_dict()}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    logs.info(f"[grow] {len(series)} steps, stopped by {stopped}: {result['final']} in {result['wall_seconds']:.0f}s")
    return result
