"""Multi-stage experiments (demo, baselines, ...): each stage is a run of the one trainer in its own
sub-workdir, built from a shared config plus changes. A finished stage with the same config is reused, so
experiments that share stages (the demo and the baselines) can run in one workdir without repeating work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax.config_lib import with_changes
from learngene_jax.train import train


def stage_config(config: ml_collections.ConfigDict, name: str, drop: tuple[str, ...] = (),
                 warmup_fraction: float = 0.0, **changes: Any) -> ml_collections.ConfigDict:
    """A training config: `config` without its experiment sections `drop`, with `changes` (dotted keys allowed;
    dict values replace a section) and a warmup of `warmup_fraction` of the stage's epochs."""
    c = with_changes(config, task="train", name=name, **changes)
    for key in drop:
        del c[key]
    if warmup_fraction:
        c.optim.warmup_epochs = warmup_fraction * c.epochs
    return c


class Pipeline:
    """Runs named stages under `workdir` and keeps their summaries and wall times."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, drop: tuple[str, ...],
                 warmup_fraction: float = 0.0):
        self.config, self.drop, self.warmup_fraction = config, drop, warmup_fraction
        self.workdir = Path(workdir).expanduser().absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict[str, Any]] = {}

    def stage(self, name: str, **changes: Any) -> dict[str, Any]:
        """Train stage `name` (or reuse it when its workdir finished with the same config)."""
        cfg = stage_config(self.config, name, self.drop, self.warmup_fraction, **changes)
        stage_dir = self.workdir / name
        done = _finished(stage_dir, cfg)
        start = time.perf_counter()
        out = done if done is not None else train(cfg, stage_dir)
        wall = round(time.perf_counter() - start, 1)
        if done is None:
            (stage_dir / "final.json").write_text(json.dumps({**out, "wall_s": wall}, indent=2))
        self.results[name] = {**out, "wall_s": out.get("wall_s", wall), "reused": done is not None}
        return self.results[name]


def _finished(stage_dir: Path, cfg: ml_collections.ConfigDict) -> dict[str, Any] | None:
    final, saved = stage_dir / "final.json", stage_dir / "config.json"
    if not (final.exists() and saved.exists()):
        return None
    if json.loads(saved.read_text()) != json.loads(cfg.to_json_best_effort()):
        return None
    return json.loads(final.read_text())
