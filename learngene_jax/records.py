"""Records of experiment workdirs: one small committed JSON per workdir (docs/records/NAME.json) holding every file
the results page reads, with the commands, commit, machine, wall time, seeds and config behind them.

`learngene_jax.results` renders the page from records alone, so every published number can be checked without the
(uncommitted) workdir; `check_numbers_in_records` finds the numbers of a text that no record holds.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from learngene_jax.errors import UserError, fail

FORMAT = 1  # the `format` key of every record; bump when the layout changes
TOP_FILES = ("summary.json", "comparison.json", "seeds.json")
PAGE_MARKDOWN = {"comparison.md", "linearity.md", "seeds.md"}  # the page regenerates these from their JSON
LONG_ARRAY = 256  # numeric lists longer than this (per-step curves) are left out: the page prints none of them
RECORD_FIX = "write it again with `python -m learngene_jax.results record --workdir W`"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def read_json(path: Path, fix: str) -> Any:
    """The JSON in `path`; a one-line UserError (ending in `fix`) if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        fail(UserError, f"{path} is not valid JSON ({str(e)[:120]}): {fix}")


def summary_kind(summary: dict[str, Any]) -> str | None:
    """'demo' (the learngene demo), 'lm' (the language-model demo), or None: a summary (Heur/Auto, Learngene Pool,
    ...) that the page shows through the summary.md written beside it."""
    if "corpus" in summary:
        return "lm"
    rows = summary.get("descendants")
    if isinstance(rows, list) and rows and any(str(k).startswith("scratch_x") for k in rows[0]):
        return "demo"
    return None


def from_workdir(workdir: Path, base: Path, name: str | None = None) -> dict[str, Any]:
    """The record of one experiment workdir (nothing is written); paths in it are relative to `workdir`, which the
    page shows relative to `base`."""
    if not workdir.is_dir():
        fail(UserError, f"no workdir at {workdir}")
    files = page_files(workdir)
    summary = files.get("summary.json")
    shown_md = PAGE_MARKDOWN | ({"summary.md"} if isinstance(summary, dict) and summary_kind(summary) else set())
    markdown = {md.name: md.read_text() for md in sorted(workdir.glob("*.md")) if md.name not in shown_md}
    if not files and not markdown:
        fail(UserError, f"nothing to record in {workdir}: no summary.json, comparison.json, seeds.json, "
                        f"linearity.json, other *.md or stage final.json there; pass the workdir of a finished run")
    configs = stage_configs(workdir, files)
    commands = workdir / "commands.txt"
    return {"format": FORMAT, "name": name or workdir.name, "workdir": _rel(workdir, base),
            "commands": commands.read_text().strip() if commands.exists() else None,
            "provenance": {**git_commit(), "machine": machine(), "wall": wall_time(files),
                           "seeds": sorted({c["seed"] for c in configs.values() if isinstance(c.get("seed"), int)})},
            "config": config_section(configs), "files": files, "markdown": markdown}


def page_files(workdir: Path) -> dict[str, Any]:
    """Every JSON the page reads, by path relative to `workdir`: summary/comparison/seeds.json, each seed
    workdir's summary and comparison, every linearity.json and every stage's final.json (sorted by path)."""
    paths = [workdir / n for n in TOP_FILES]
    if (workdir / "seeds.json").exists():
        seeds = read_json(workdir / "seeds.json", "rerun `python -m learngene_jax.seeds` on this workdir")
        paths += [workdir / d / n for d in seeds.get("workdirs", {}).values() for n in ("summary.json",
                                                                                        "comparison.json")]
    paths += [*workdir.rglob("linearity.json"), *workdir.rglob("final.json")]
    fix = "rerun the stage that writes it, or move it out of the workdir"
    found = sorted({Path(_rel(p, workdir)) for p in paths if p.is_file()})
    return {str(rel): _trim(read_json(workdir / rel, fix)) for rel in found}


def _trim(value: Any) -> Any:
    """`value` with numeric lists longer than LONG_ARRAY replaced by a note of their length."""
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > LONG_ARRAY and all(isinstance(v, int | float | list) for v in value):
            return {"left_out": f"{len(value)} values (an array the results page does not print)"}
        return [_trim(v) for v in value]
    return value


def stage_configs(workdir: Path, files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """'.' → WORKDIR/config.json if there is one, then each stage (the folder of a final.json) → its config.json."""
    stages = sorted({Path(k).parent for k in files if Path(k).name == "final.json"})
    paths = {".": workdir / "config.json", **{str(s): workdir / s / "config.json" for s in stages}}
    return {k: read_json(p, "rerun the stage that writes it") for k, p in paths.items() if p.is_file()}


def config_section(configs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The run's configs, small: the first one in full (`of` names it: '.' is WORKDIR/config.json, else a stage)
    and every one as its changes against it (`stage_config` rebuilds them)."""
    if not configs:
        return None
    of, full = next(iter(configs.items()))
    return {"of": of, "full": full, "stages": {k: config_diff(full, c) for k, c in configs.items()}}


def _flat(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{key path: leaf}; an empty dict is a leaf, except at the root (no keys at all)."""
    if isinstance(tree, dict) and (tree or not prefix):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, (*prefix, key)).items()}
    return {prefix: tree}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # 1 vs True vs 1.0 differ


def config_diff(full: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """{'set': {dotted key: value}, 'removed': [dotted key]} taking `full` to `config` ({} when equal); configs
    with a '.' in a key are kept whole as {'full': config}."""
    base, flat = _flat(full), _flat(config)
    if any("." in part for key in (*base, *flat) for part in key):
        return {"full": config}
    changed = {".".join(k): v for k, v in flat.items() if k not in base or not _same(base[k], v)}
    removed = [".".join(k) for k in base if k not in flat]
    return {**({"set": changed} if changed else {}), **({"removed": removed} if removed else {})}


def stage_config(record: dict[str, Any], stage: str) -> dict[str, Any]:
    """The full config a stage of the record ran with ('.' for WORKDIR/config.json)."""
    section = record["config"]
    diff = section["stages"][stage]
    if "full" in diff:
        return diff["full"]
    flat = _flat(section["full"])
    for key in diff.get("removed", []):
        flat.pop(tuple(key.split(".")))
    flat.update({tuple(k.split(".")): v for k, v in diff.get("set", {}).items()})
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return tree


def wall_time(files: dict[str, Any]) -> dict[str, Any] | None:
    """Seconds the run took and where that number comes from: the summaries' total_s, else seeds.json's wall_s,
    else the sum of the stages' wall_s."""
    totals = [(n, files[n]["total_s"]) for n in ("summary.json", "comparison.json")
              if isinstance(files.get(n), dict) and isinstance(files[n].get("total_s"), int | float)]
    if totals:
        return {"seconds": round(sum(t for _, t in totals), 1), "source": " + ".join(f"{n} total_s" for n, _ in totals)}
    if isinstance(files.get("seeds.json", {}).get("wall_s"), int | float):
        return {"seconds": round(files["seeds.json"]["wall_s"], 1), "source": "seeds.json wall_s"}
    walls = [f["wall_s"] for k, f in files.items()
             if Path(k).name == "final.json" and isinstance(f.get("wall_s"), int | float)]
    return {"seconds": round(sum(walls), 1), "source": f"sum of {len(walls)} stages' wall_s"} if walls else None


def git_commit() -> dict[str, Any]:
    """{'commit': HEAD of this package's repository, 'dirty': whether tracked files differ from it} (None, None
    outside a git checkout)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                                  timeout=60).stdout.strip()
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine() -> dict[str, Any]:
    """The machine this process runs on: CPU model, cores, memory, OS, Python, jax/jaxlib/flax, jax devices."""
    from importlib import metadata

    import jax

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "memory_gib": _memory_gib(), "os": platform.platform(),
            "python": platform.python_version(), "jax": version("jax"), "jaxlib": version("jaxlib"),
            "flax": version("flax"), "backend": jax.default_backend(),
            "devices": f"{len(devices)} × {devices[0].device_kind}"}


def _proc_field(path: str, field: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), None)


def _memory_gib() -> float | None:
    total = _proc_field("/proc/meminfo", "MemTotal")  # "16384256 kB"
    return round(int(total.split()[0]) / 2**20, 1) if total else None


def save(record: dict[str, Any], directory: Path) -> Path:
    """Write DIRECTORY/NAME.json (indented, so a diff shows what changed); returns its path."""
    name = record["name"]
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        fail(UserError, f"record name {name!r} is not a plain file name: pass --name with letters, digits, _ . -")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def load(path: Path) -> dict[str, Any]:
    """One record file (its name is the file's stem, so a renamed file links to itself)."""
    data = read_json(path, RECORD_FIX)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        fail(UserError, f"{path} is not a results record (format {FORMAT}): {RECORD_FIX}")
    return {**data, "name": path.stem}


def load_all(directory: Path, names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The records `names` (in that order; default every record, sorted) of DIRECTORY."""
    available = {p.stem: p for p in sorted(directory.glob("*.json"))} if directory.is_dir() else {}
    if not available:
        fail(UserError, f"no records in {directory}: write one with `python -m learngene_jax.results record "
                        f"--workdir W --records {directory}`")
    names = [n.removesuffix(".json") for n in names] or sorted(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        fail(UserError, f"no record named {', '.join(unknown)} in {directory} (there: {', '.join(available)}); "
                        f"write it with `python -m learngene_jax.results record --workdir W --name NAME` or drop it")
    return [load(available[n]) for n in names]


# A number as the page prints it: decimals (0.929, 22.4) or thousands separators (1,294); not a piece of a
# version, a hex digest or a word (0.4.35, glibc2.35, 2.20GHz).
NUMBER = re.compile(r"(?<![\w.,-])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?!\w|[.,]\d)")
SCALES = (1, 1e-3, 1e-6, 1e-9, 100)  # as printed: plain, in k / M / G (from 0.1 up), a fraction as a percentage


def page_numbers(text: str) -> list[str]:
    """The numbers `text` prints with decimals or thousands separators, as printed."""
    return NUMBER.findall(text)


def record_values(record: dict[str, Any]) -> tuple[list[float], set[str]]:
    """The record's numbers: every numeric JSON value (with the linearity means the page computes from them), and
    the number tokens inside its strings outside the stored markdown (commands, corpus names)."""
    from learngene_jax.analyze import linearity_means

    values: list[float] = []
    tokens: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
        elif isinstance(value, str):
            tokens.update(NUMBER.findall(value))

    walk({k: v for k, v in record.items() if k != "markdown"})
    for key, report in record["files"].items():
        means = linearity_means(report["params"]) if Path(key).name == "linearity.json" else None
        values += means[1:] if means else []
    return values, tokens


def check_numbers_in_records(text: str, records: Iterable[dict[str, Any]]) -> list[str]:
    """The numbers printed in `text` (decimals, thousands separators) that no record holds: a record value matches
    when rounding it (or it in k, M, G, or as a percentage) to the printed decimals gives the printed digits, sign
    aside; a number token inside a record's string (a command, a corpus name) matches itself."""
    values: list[float] = []
    tokens: set[str] = set()
    for record in records:
        v, t = record_values(record)
        values += v
        tokens |= t
    shown: dict[int, set[str]] = {}

    def formatted(decimals: int) -> set[str]:
        if decimals not in shown:
            shown[decimals] = {f"{v * s:.{decimals}f}".lstrip("-") for v in values for s in SCALES
                               if v == v and (s == 1 or (s < 1 and abs(v) * s >= 0.1) or (s > 1 and abs(v) <= 1))}
        return shown[decimals]

    missing = []
    for token in page_numbers(text):
        digits = token.replace(",", "").lstrip("-")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        if token not in tokens and digits not in formatted(decimals):
            missing.append(token)
    return missing
