"""Multi-stage experiments (demo, baselines, Heur/Auto, Learngene Pool, sweeps) and their summaries: one stage
runner (each trainer stage in its own sub-workdir, reused when it finished with the same config) and one summary
writer (summary.md + summary.json + summary.png) that every experiment, analysis and the results page share.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from learngene_jax import logs
from learngene_jax.config_lib import with_changes
from learngene_jax.errors import make_dir


def stage_config(config: ml_collections.ConfigDict, name: str, drop: tuple[str, ...] = (),
                 warmup_fraction: float = 0.0, **changes: Any) -> ml_collections.ConfigDict:
    """A training config: `config` without its experiment sections `drop`, with `changes` (dotted keys allowed;
    dict values replace a section) and a warmup of `warmup_fraction` of the stage's epochs."""
    c = with_changes(config, task="train", name=name, **changes)
    for key in drop:
        if key in c:
            del c[key]
    if warmup_fraction:
        c.optim.warmup_epochs = warmup_fraction * c.epochs
    return c


class Stages:
    """Runs the named stages of one experiment under `workdir`, keeping their summaries and wall times (s)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, drop: tuple[str, ...] = (),
                 warmup_fraction: float = 0.0):
        self.config, self.drop, self.warmup_fraction = config, drop, warmup_fraction
        self.workdir = make_dir(Path(workdir).expanduser().absolute())
        self.results: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}

    def stage(self, name: str, **changes: Any) -> dict[str, Any]:
        """Train stage `name` = the experiment's config with `changes`, in WORKDIR/name (see `train_config`)."""
        return self.train_config(name, stage_config(self.config, name, self.drop, self.warmup_fraction, **changes))

    def train_config(self, name: str, cfg: ml_collections.ConfigDict, stage_dir: str | Path | None = None
                     ) -> dict[str, Any]:
        """Train `cfg` in `stage_dir` (default WORKDIR/name), or reuse that directory's result when it finished
        with the same config; an unfinished one resumes from its checkpoint."""
        stage_dir = Path(stage_dir) if stage_dir is not None else self.workdir / name
        from learngene_jax.train import train  # late: summaries (analysis, results page) need no trainer

        done = _finished(stage_dir, cfg)
        start = time.perf_counter()
        out = done if done is not None else train(cfg, stage_dir)
        wall = round(time.perf_counter() - start, 1)
        if done is None:
            (stage_dir / "final.json").write_text(json.dumps({**out, "wall_s": wall}, indent=2))
        self.results[name] = {**out, "wall_s": out.get("wall_s", wall), "reused": done is not None}
        self.timings[name] = self.results[name]["wall_s"]
        return self.results[name]

    def timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a stage that is not a trainer run (`fn(*args, **kwargs)`), recording its wall time."""
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 1)
        return out

    @property
    def total_s(self) -> float:
        """Wall time of every stage so far (reused stages count what they took when they ran)."""
        return round(sum(self.timings.values()), 1)


def _finished(stage_dir: Path, cfg: ml_collections.ConfigDict) -> dict[str, Any] | None:
    final, saved = stage_dir / "final.json", stage_dir / "config.json"
    if not (final.exists() and saved.exists()):
        return None
    if json.loads(saved.read_text()) != json.loads(cfg.to_json_best_effort()):
        return None
    return json.loads(final.read_text())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def timings_table(timings: dict[str, float]) -> str:
    """Markdown table of stage wall times (s)."""
    return markdown_table(["stage", "wall (s)"], [[name, seconds] for name, seconds in timings.items()])


# One plotted line: (y values, matplotlib format string, legend label, extra plot kwargs such as alpha).
Line = tuple[Sequence[float], str, str, dict[str, Any]]


def plot_against_depth(path: Path, depths: Sequence[int], lines: Sequence[Line], ylabel: str, *,
                       size: tuple[float, float] = (6, 4), ylim: tuple[float, float] | None = None,
                       legend_loc: str = "best") -> None:
    """A PNG of `lines` against descendant depth (the demos' and the sweep's summary.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    for values, style, label, kwargs in lines:
        ax.plot(depths, values, style, label=label, **kwargs)
    ax.set_xlabel("descendant depth")
    ax.set_ylabel(ylabel)
    ax.set_xticks(depths)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(workdir: str | Path, results: dict[str, Any], *, title: str, table: str,
                  sections: Sequence[str] = (), plot: Callable[[Path], None] | None = None,
                  name: str = "summary") -> Path:
    """Write WORKDIR/NAME.json (`results`), NAME.md (`# title`, the main `table`, then `sections`, each markdown)
    and, with `plot`, NAME.png (`plot(path)` draws it); print the table on stdout. Returns the markdown path."""
    workdir = make_dir(workdir)
    (workdir / f"{name}.json").write_text(json.dumps(results, indent=2))
    path = workdir / f"{name}.md"
    path.write_text("\n\n".join([f"# {title}", table, *sections]).rstrip() + "\n")
    written = "md,json"
    if plot is not None:
        plot(workdir / f"{name}.png")
        written += ",png"
    print(table, flush=True)
    logs.info(f"summary written to {workdir}/{name}.{{{written}}}")
    return path
