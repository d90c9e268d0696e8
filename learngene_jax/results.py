"""python -m learngene_jax.results record --workdir runs/X [--name NAME] [--records docs/records]
python -m learngene_jax.results --records docs/records [NAME ...] --out docs/results.md
python -m learngene_jax.results --workdir runs/X [--workdir ...] --out docs/results.md

Writes the results page from records (`learngene_jax.records`): `record` keeps, for one experiment workdir, every JSON
the page reads (demo summary.json, baselines comparison.json, seeds.json of `learngene_jax.seeds` and each seed's
summaries, linearity.json reports, each stage's final.json, other summaries' .md) with its commands, commit, machine,
wall time, seeds and config in DIR/NAME.json, to be committed; `--records DIR` renders the page from those files
alone (the records named, in that order, or all of them sorted); `--workdir` renders the same page from workdirs
directly (through records built in memory). Every stage is listed with its numbers and config, so each number can be
traced.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from learngene_jax import records
from learngene_jax.errors import UserError, fail, run

OVER_SIZE = 300_000  # bytes: a record larger than this is worth a look (per-step arrays kept by mistake?)


def _shown(record: dict[str, Any], rel: str) -> str:
    """A path of the record's workdir as the page shows it."""
    return str(Path(record["workdir"]) / rel)


def record_section(record: dict[str, Any]) -> str:
    """The markdown of one record (one experiment workdir)."""
    from learngene_jax.analyze import format_table
    from learngene_jax.experiments.baselines import comparison_table
    from learngene_jax.experiments.demo import scratch_factor, summary_table
    from learngene_jax.seeds import claim_lines, seeds_table, time_line

    files = record["files"]
    parts = [f"## `{record['workdir']}`", provenance_lines(record)]
    if record.get("commands"):
        parts.append("Commands run in this workdir:\n\n```\n" + record["commands"] + "\n```")
    summary = files.get("summary.json")
    kind = records.summary_kind(summary) if isinstance(summary, dict) else None
    if kind == "demo":
        parts.append(f"### Learngene demo (from `summary.json`)\n\n{summary_table(summary, scratch_factor(summary))}")
    elif kind == "lm":
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
    if "comparison.json" in files:
        parts.append("### Baselines (from `comparison.json`; cost = epochs × forward GMACs per image)\n\n"
                     + comparison_table(files["comparison.json"]["rows"]))
    if "seeds.json" in files:
        seeds = files["seeds.json"]
        parts.append(f"### Demo and baselines over seeds {', '.join(map(str, seeds['seeds']))} (from `seeds.json`; "
                     f"sample std, n − 1)\n\n{seeds_table(seeds)}\n\n{claim_lines(seeds)}\n\n{time_line(seeds)}")
    for rel in (k for k in files if Path(k).name == "linearity.json"):
        data = files[rel]
        parts.append(f"### Layer linearity: {data['what']} (from `{_shown(record, rel)}`)\n\n"
                     f"Source: `{data['source']}`\n\n{format_table(data['params'])}")
    for rel, text in record["markdown"].items():
        parts.append(f"### From `{_shown(record, rel)}`\n\n" + demote_headings(text.strip()))
    stages = stage_rows(record)
    if stages:
        parts.append("### Stages\n\n| stage | top-1 | steps | wall (s) | config |\n|---|---|---|---|---|\n"
                     + "\n".join(stages))
    return "\n\n".join(parts)


def demote_headings(text: str, levels: int = 3) -> str:
    """Markdown with its headings `levels` deeper (at most ######), fenced code untouched: a summary.md shown
    inside a section of the page."""
    lines, fenced = [], False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        heading = re.match(r"(#{1,6}) ", line)
        if heading and not fenced:
            line = "#" * min(6, len(heading[1]) + levels) + line[len(heading[1]):]
        lines.append(line)
    return "\n".join(lines)


def provenance_lines(record: dict[str, Any]) -> str:
    """Markdown list: the record file, the commit, the machine, the wall time and the seeds."""
    p = record["provenance"]
    m = p["machine"]
    commit = f"`{p['commit'][:12]}`" if p["commit"] else "unknown (not a git checkout)"
    wall = f"{p['wall']['seconds']:.0f} s ({p['wall']['source']})" if p["wall"] else "not recorded"
    memory = f"{m['memory_gib']} GiB" if m["memory_gib"] is not None else "memory unknown"
    lines = [f"Record: [`records/{record['name']}.json`](records/{record['name']}.json) (this section's numbers, "
             f"commands and configs)",
             f"Commit: {commit}" + (" with uncommitted changes to tracked files" if p["dirty"] else ""),
             f"Machine (where the record was written): {m['cpu']}, {m['cores']} cores, {memory}; {m['os']}; "
             f"Python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}, flax {m['flax']}; "
             f"{m['backend']} backend, {m['devices']}",
             f"Wall time: {wall}"]
    if p["seeds"]:
        lines.append(f"Seeds (config.seed): {', '.join(map(str, p['seeds']))}")
    return "\n".join(f"- {line}" for line in lines)


def stage_rows(record: dict[str, Any]) -> list[str]:
    """One table row per stage of the record (a folder with a final.json; in a seeds workdir, named seed{N}/stage)
    with its config's path in the workdir (the config itself is in the record)."""
    configs = (record["config"] or {}).get("stages", {})
    rows = []
    for rel, out in record["files"].items():
        if Path(rel).name != "final.json":
            continue
        stage = str(Path(rel).parent)
        top1 = f"{out['top1']:.4f}" if isinstance(out.get("top1"), int | float) else "—"
        config = f"`{_shown(record, str(Path(stage) / 'config.json'))}`" if stage in configs else "`—`"
        rows.append(f"| {stage} | {top1} | {out.get('steps', '—')} | {out.get('wall_s', '—')} | {config} |")
    return rows


def render(page_records: list[dict[str, Any]]) -> str:
    """The whole page."""
    body = "\n\n".join(record_section(r) for r in page_records)
    return ("# Results\n\nGenerated by `python -m learngene_jax.results` from one record per experiment workdir "
            "(`python -m learngene_jax.results record --workdir W` writes `docs/records/NAME.json`; "
            "`--records docs/records` renders this page from the records alone); do not edit by hand. Each record "
            "holds the full config of every stage.\n\n" + body + "\n")


def record_main(argv: list[str]) -> None:
    """`record`: write one workdir's record."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.results record",
                                description="Write DIR/NAME.json: the record of one experiment workdir.")
    p.add_argument("--workdir", required=True, help="the experiment workdir")
    p.add_argument("--name", help="record name (default: the workdir's basename)")
    p.add_argument("--records", default="docs/records", help="directory of the records")
    p.add_argument("--base", default=".", help="the workdir is shown relative to this directory")
    args = p.parse_args(argv)
    record = records.from_workdir(Path(args.workdir).absolute(), Path(args.base).absolute(), args.name)
    path = records.save(record, Path(args.records))
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1000:.0f} kB; {len(record['files'])} JSON files, {len(record['markdown'])} "
          f"markdown, wall time {record['provenance']['wall']})")
    if size > OVER_SIZE:
        print(f"warning: {path} is over {OVER_SIZE // 1000} kB; look for arrays the page does not print",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["record"]:
        return record_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m learngene_jax.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", help="directory of records (docs/records): the page from them alone")
    source.add_argument("--workdir", action="append", help="an experiment workdir (repeatable)")
    p.add_argument("names", nargs="*", help="with --records: the records to render, in order (default: all, sorted)")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--base", default=".", help="with --workdir: workdirs are shown relative to this directory")
    args = p.parse_args(argv)
    if args.records:
        page_records = records.load_all(Path(args.records), args.names)
    elif args.names:
        fail(UserError, f"record names ({' '.join(args.names)}) go with --records DIR, not --workdir")
    else:
        base = Path(args.base).absolute()
        page_records = [records.from_workdir(Path(w).absolute(), base) for w in args.workdir]
    page = render(page_records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    print(f"wrote {out} ({len(page.splitlines())} lines)")


if __name__ == "__main__":
    run(main)
