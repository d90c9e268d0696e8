"""The report: rows combined over rounds (median, spread, ratios pair by pair), a table for people, then one JSON
object per framework (last lines)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from learngene_jax.bench.runner import PER_STEP


def _spread(values: list[float], digits: int = 2) -> list[float]:
    return [round(min(values), digits), round(max(values), digits)]


# How a field of the per-process rows combines over rounds (the timed key itself: median; others: first round's).
OVER_ROUNDS: dict[str, Callable[[list[float]], float]] = {
    "step_ms_min": min, "peak_rss_mb": max, "peak_worker_rss_mb": max, "peak_total_rss_mb": max,
    "cores_busy": statistics.median, "cores_busy_main": statistics.median,
    "cores_busy_workers": statistics.median, "child_processes": max}


def combine(results: dict[str, list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One row per framework: the median of `key` over rounds, its spread and values, and in the first
    framework's row its ratio to each other framework, pair by pair (same round), median and spread."""
    lower_is_better = key == "step_ms"
    rows = []
    for rounds in results.values():
        values = [r[key] for r in rounds]
        row = {**rounds[0], key: round(statistics.median(values), 2), f"{key}_spread": _spread(values),
               f"{key}_rounds": values, "rounds": len(rounds)}
        row.update({k: round(how([r[k] for r in rounds]), 2) for k, how in OVER_ROUNDS.items() if k in row})
        if key == "step_ms":
            for rate, count in PER_STEP.items():
                if row.get(rate):
                    row[rate] = round(count(row) * 1000 / row["step_ms"], 2)
        row.pop("check", None)
        rows.append(row)
    first = next(iter(results), None)
    for framework in list(results)[1:]:
        ratios = [a[key] / b[key] for a, b in zip(results[first], results[framework], strict=False)]
        name = "step_time_ratio" if lower_is_better else f"{key}_ratio"
        rows[0][f"{name}_vs_{framework}"] = round(statistics.median(ratios), 3)
        rows[0][f"{name}_vs_{framework}_spread"] = _spread(ratios, 3)
    return rows


def _ratio_lines(rows: list[dict[str, Any]], key: str) -> list[str]:
    lower_is_better = key == "step_ms"
    first, lines = rows[0]["framework"], []
    name = "step_time_ratio" if lower_is_better else f"{key}_ratio"
    for other in rows[1:]:
        median = rows[0].get(f"{name}_vs_{other['framework']}")
        if median is None:
            continue
        low, high = rows[0][f"{name}_vs_{other['framework']}_spread"]
        better = "< 1" if lower_is_better else "> 1"
        what = "step-time" if lower_is_better else "images/s"
        lines.append(f"{first}/{other['framework']} {what} ratio: {median:.2f} (pairs {low:.2f}–{high:.2f}, "
                     f"{rows[0]['rounds']} rounds; {better}: {first} is faster)")
    return lines


def report_steps(rows: list[dict[str, Any]]) -> None:
    """Step benchmarks: a table for people, ratio and MFU lines, then one JSON object per framework."""
    rate, size, size_label = ("tokens_per_s", "context", "ctx") if "tokens_per_s" in rows[0] else (
        "images_per_s", "img", "img")
    print(f"{'framework':<14} {'device':<16} {'model':<12} {'batch':>5} {size_label:>5} {'step_ms':>9} "
          f"{'(min–max over rounds)':>22} {rate.replace('_per_s', '/s'):>10}")
    for r in rows:
        low, high = r["step_ms_spread"]
        spread = f"{low:.1f}–{high:.1f}"
        print(f"{r['framework']:<14} {r['device']:<16} {r['model']:<12} {r['batch']:>5} {r[size]:>5} "
              f"{r['step_ms']:>9.1f} {spread:>22} {r[rate]:>10.1f}")
    for line in _ratio_lines(rows, "step_ms"):
        print(line)
    if any(r.get("mfu") for r in rows):
        print("MFU: " + ", ".join(f"{r['framework']} {100 * r['mfu']:.1f}%" for r in rows if r.get("mfu")))
    for r in rows:
        print(json.dumps(r))


def report_input(rows: list[dict[str, Any]]) -> None:
    """The input benchmark: a table for people, the ratio line, then one JSON object per framework."""
    print(f"{'framework':<14} {'workers':>7} {'images/s':>9} {'(min–max)':>15} {'cores busy':>10} "
          f"{'bytes/image':>11} {'peak RSS main / worker MB':>26}")
    for r in rows:
        low, high = r["images_per_s_spread"]
        spread, rss = f"{low:.1f}–{high:.1f}", f"{r['peak_rss_mb']:.0f} / {r['peak_worker_rss_mb']:.0f}"
        print(f"{r['framework']:<14} {r['workers']:>7} {r['images_per_s']:>9.1f} {spread:>15} "
              f"{r['cores_busy']:>10.2f} {r['bytes_per_image']:>11,.0f} {rss:>26}")
    for line in _ratio_lines(rows, "images_per_s"):
        print(line)
    for note in dict.fromkeys(r["note"] for r in rows if r.get("note")):
        print(f"note: {note}")
    for r in rows:
        print(json.dumps(r))


def describe_step(row: dict[str, Any]) -> str:
    """A step row in a round's progress line."""
    return f"{row['step_ms']:.1f} ms/step"


def describe_input(row: dict[str, Any]) -> str:
    """An input row in a round's progress line."""
    return f"{row['images_per_s']:.1f} images/s, {row['cores_busy']:.2f} cores busy"
