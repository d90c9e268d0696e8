"""python -m learngene_jax.results --workdir runs/demo [--workdir ...] --out docs/results.md

Writes the results page from experiment workdirs: every table is regenerated from the JSON the runs wrote
(demo summary.json, baselines comparison.json, seeds.json of `learngene_jax.seeds`, linearity.json reports, other
methods' summary.md), and every stage (each seed's, in a seeds workdir) is listed with the command that ran it, its
config file and its numbers, so each number can be traced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from learngene_jax import cli
from learngene_jax.errors import UserError, fail

KNOWN_MARKDOWN = {"summary.md", "comparison.md", "linearity.md", "seeds.md"}  # regenerated from their JSON instead


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def workdir_section(workdir: Path, base: Path) -> str:
    """The markdown of one experiment workdir."""
    from learngene_jax.analyze import format_table
    from learngene_jax.experiments.baselines import comparison_table
    from learngene_jax.experiments.demo import summary_table
    from learngene_jax.seeds import claim_lines, seeds_table, time_line

    if not workdir.is_dir():
        fail(UserError, f"no workdir at {workdir}")
    parts = [f"## `{_rel(workdir, base)}`"]
    commands = workdir / "commands.txt"
    if commands.exists():
        parts.append("Commands run in this workdir:\n\n```\n" + commands.read_text().strip() + "\n```")
    if (workdir / "summary.json").exists():
        summary = json.loads((workdir / "summary.json").read_text())
        if "descendants" in summary:
            factor = scratch_factor(summary)
            parts.append(f"### Learngene demo (from `summary.json`)\n\n{summary_table(summary, factor)}")
        elif "corpus" in summary:  # the language-model demo
            from learngene_jax.experiments import lm_demo

            factor = max(int(k.split("_x")[1]) for k in summary["rows"][0] if k.startswith("scratch_x"))
            c = summary["corpus"]
            parts.append(f"### Language-model demo (from `summary.json`; validation loss in nats per byte on "
                         f"{c['validation']['documents']} held-out documents of {c['corpus']}, sha256 "
                         f"{c['sha256'][:16]}…)\n\n{lm_demo.summary_table(summary, factor)}")
            if summary.get("lora_stream"):
                from learngene_jax.methods.heur import lm_stream

                stream = summary["lora_stream"]
                parts.append(f"### Heur / Auto Learngene with LoRA against plain LoRA (from `summary.json`)\n\n"
                             f"{lm_stream.summary_table(stream)}\n\n{lm_stream.description(stream)}")
    if (workdir / "comparison.json").exists():
        comparison = json.loads((workdir / "comparison.json").read_text())
        parts.append("### Baselines (from `comparison.json`; cost = epochs × forward GMACs per image)\n\n"
                     + comparison_table(comparison["rows"]))
    if (workdir / "seeds.json").exists():
        seeds = json.loads((workdir / "seeds.json").read_text())
        parts.append(f"### Demo and baselines over seeds {', '.join(map(str, seeds['seeds']))} (from `seeds.json`; "
                     f"sample std, n − 1)\n\n{seeds_table(seeds)}\n\n{claim_lines(seeds)}\n\n{time_line(seeds)}")
    for report in sorted(workdir.rglob("linearity.json")):
        data = json.loads(report.read_text())
        parts.append(f"### Layer linearity: {data['what']} (from `{_rel(report, base)}`)\n\n"
                     f"Source: `{data['source']}`\n\n{format_table(data['params'])}")
    for md in sorted(workdir.glob("*.md")):
        if md.name not in KNOWN_MARKDOWN:
            parts.append(f"### From `{_rel(md, base)}`\n\n" + md.read_text().strip())
    stages = stage_rows(workdir, base)
    if stages:
        parts.append("### Stages\n\n| stage | top-1 | steps | wall (s) | config |\n|---|---|---|---|---|\n"
                     + "\n".join(stages))
    return "\n\n".join(parts)


def scratch_factor(summary: dict[str, Any]) -> int:
    """The largest scratch budget of a demo summary, as a multiple of the fine-tuning epochs (k of scratch_xk)."""
    row = summary["descendants"][0]
    factors = [int(k.split("_x")[1]) for k in row if k.startswith("scratch_x")]
    return max(factors)


def stage_rows(workdir: Path, base: Path) -> list[str]:
    """One table row per stage sub-workdir that finished (has final.json and config.json), and for a seeds
    workdir per stage of each seed's workdir (named seed{N}/stage)."""
    finals = sorted(workdir.glob("*/final.json"))
    if (workdir / "seeds.json").exists():
        for name in json.loads((workdir / "seeds.json").read_text())["workdirs"].values():
            finals += sorted((workdir / name).glob("*/final.json"))
    rows = []
    for final in finals:
        stage = final.parent
        out = json.loads(final.read_text())
        config = stage / "config.json"
        top1 = f"{out['top1']:.4f}" if isinstance(out.get("top1"), int | float) else "—"
        rows.append(f"| {_rel(stage, workdir)} | {top1} | {out.get('steps', '—')} | {out.get('wall_s', '—')} | "
                    f"`{_rel(config, base) if config.exists() else '—'}` |")
    return rows


def render(workdirs: list[Path], base: Path) -> str:
    """The whole page."""
    body = "\n\n".join(workdir_section(w, base) for w in workdirs)
    return ("# Results\n\nGenerated by `python -m learngene_jax.results` from the workdirs below; do not edit by "
            "hand. Each stage's `config.json` holds the full config it ran with.\n\n" + body + "\n")


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", action="append", required=True, help="an experiment workdir (repeatable)")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--base", default=".", help="paths in the page are shown relative to this directory")
    args = p.parse_args(argv)
    base = Path(args.base).absolute()
    page = render([Path(w).absolute() for w in args.workdir], base)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"wrote {out} ({len(page.splitlines())} lines)")


if __name__ == "__main__":
    cli.run(main)
