"""The documentation cannot drift: the site builds in strict mode, every command block marked runnable in the README
and the docs runs at smoke size (docs/contributing.md, "Runnable commands"), and every Colab badge and install line
names pyproject's repository."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- runnable(?P<options>(?:\s.*?)?)\s*-->")
OPTION = re.compile(r'(\w+)(?:="([^"]*)"|=(\S+))?')
FENCE = re.compile(r"(`{3,})\s*(\w*)")
LANGUAGES = {"bash": "bash", "sh": "bash", "console": "bash", "python": "python"}


@dataclass
class Block:
    """A runnable block: where it is, its language, its text after the marker's edits, what it needs."""

    page: str
    line: int
    language: str
    text: str
    needs: set[str] = field(default_factory=set)


def runnable_blocks(path: Path) -> list[Block]:
    """The blocks of a page whose fence follows a `<!-- runnable ... -->` line (fences inside fences ignored)."""
    lines = path.read_text().splitlines()
    blocks, fence, i = [], None, 0
    while i < len(lines):
        stripped = lines[i].strip()
        opening = FENCE.match(stripped)
        if fence:
            if set(stripped) == {"`"} and len(stripped) >= len(fence):
                fence = None
        elif opening:
            fence = opening[1]
        elif (marker := MARKER.fullmatch(stripped)) and i + 1 < len(lines):
            head = FENCE.match(lines[i + 1].strip())
            assert head and head[2] in LANGUAGES, f"{path.name}:{i + 1}: a runnable marker must precede a fence of " \
                                                  f"one of {sorted(LANGUAGES)}"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == head[1])
            blocks.append(_block(path, i + 1, LANGUAGES[head[2]], "\n".join(lines[i + 2:end]), marker["options"]))
            i = end
        i += 1
    return blocks


def _block(path: Path, line: int, language: str, text: str, options: str) -> Block:
    """Apply a marker's options (needs=, replace="OLD=>NEW", append="ARGS") to a block's text."""
    block = Block(str(path.relative_to(REPO)), line, language, text)
    for option in OPTION.finditer(options):
        name, value = option[1], option[2] if option[2] is not None else option[3] or ""
        if name == "needs":
            block.needs.add(value)
        elif name == "replace":
            old, sep, new = value.partition("=>")
            assert sep and old in block.text, f"{block.page}:{line}: replace={value!r} matches nothing"
            block.text = block.text.replace(old, new)
        elif name == "append":
            assert language == "bash", f"{block.page}:{line}: append= is for shell blocks"
            commands = re.sub(r"\\\n\s*", " ", block.text).splitlines()
            block.text = "\n".join(_append(c, value) for c in commands)
        else:
            raise AssertionError(f"{block.page}:{line}: unknown runnable option {name}={value!r}")
    assert block.needs <= {"demo"}, f"{block.page}:{line}: needs one of: demo"
    return block


def _append(command: str, args: str) -> str:
    """`command args`, before a trailing `# comment`; blank and comment lines unchanged."""
    code, sep, comment = command.partition(" #")
    if not code.strip() or code.lstrip().startswith("#"):
        return command
    return f"{code.rstrip()} {args}" + (f"  #{comment}" if sep else "")


BLOCKS = [b for page in PAGES for b in runnable_blocks(page)]


def _environment() -> dict[str, str]:
    """A user's shell: the venv's `python` and `learngene` first on PATH, one CPU device."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "").strip()
    return env


def _workdir(path: Path) -> Path:
    """A fresh directory linking the repository's read-only inputs (configs/, docs/records/)."""
    (path / "docs").mkdir(parents=True)
    (path / "configs").symlink_to(REPO / "configs")
    (path / "docs" / "records").symlink_to(REPO / "docs" / "records")
    return path


def _run(language: str, text: str, cwd: Path, what: str) -> None:
    argv = ["bash", "-euo", "pipefail", "-c", text] if language == "bash" else [sys.executable, "-c", text]
    proc = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{text}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The README's first set-up command's demo at smoke size, in a workdir whose runs/demo blocks copy."""
    setup = re.search(r"## Set-up.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]
    command = re.search(r"learngene train [^&\n]*", setup)[0].strip()
    assert command == "learngene train --config configs/demo.py --workdir runs/demo", command
    work = _workdir(tmp_path_factory.mktemp("demo"))
    # a 3-layer TLEG aux (smoke: 2), so that the linearity analysis has a line to fit
    _run("bash", command.replace("configs/demo.py", "configs/demo.py:smoke=True") + " --config.demo.tleg_depth=3", work,
         "the demo")
    return work


def test_docs_build_strict(tmp_path):
    """mkdocs build --strict: no broken link, missing anchor, unresolved API reference or any other warning."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = {**_environment(), "NO_MKDOCS_2_WARNING": "1"}  # material's end-of-life banner
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0 and not warnings, proc.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "api" / "genes" / "index.html").is_file()


def test_runnable_blocks_are_found():
    """The marker is read: the README example, the demo follow-ups and the smoke runs the docs promise."""
    where = {(b.page, b.language) for b in BLOCKS}
    assert ("README.md", "python") in where and ("docs/getting-started.md", "bash") in where, where
    example = next(b for b in BLOCKS if b.page == "README.md")
    assert len(example.text.strip().splitlines()) <= 5 and example.needs == {"demo"}


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_runnable_block(block, tmp_path, request):
    """Each runnable block runs, in a fresh directory (with the demo's runs/demo when it needs it)."""
    work = _workdir(tmp_path / "work")
    if "demo" in block.needs:
        shutil.copytree(request.getfixturevalue("demo") / "runs", work / "runs", symlinks=True)
    _run(block.language, block.text, work, f"{block.page}:{block.line}")


def _repository_module():
    spec = importlib.util.spec_from_file_location("docs_repository", REPO / "docs" / "repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_badges_and_install_lines_name_pyprojects_repository():
    """Every Colab badge and notebook install line names pyproject's [project.urls] Repository (fix: python
    docs/repository.py), every notebook has a README badge, and the README says when the badges work."""
    repository = _repository_module()
    assert repository.stale() == []
    readme = (REPO / "README.md").read_text()
    badged = {m[2] for m in repository.COLAB.finditer(readme)}
    assert badged == {f"notebooks/{p.name}" for p in (REPO / "notebooks").glob("*.ipynb")}
    assert "once that repository is public" in readme


def test_repository_rewrite_points_everything_at_the_new_url(tmp_path):
    """Changing the one setting and running the script moves every badge and install line."""
    repository = _repository_module()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "getting-started.md", tmp_path / "docs")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(repository.repository_url(), "https://github.com/o/r"))
    assert repository.stale(tmp_path) != []
    assert {p.name for p in repository.rewrite(tmp_path)} >= {"README.md", "getting-started.md", "01_quickstart.ipynb"}
    assert repository.stale(tmp_path) == []
    assert "git+https://github.com/o/r" in (tmp_path / "notebooks" / "01_quickstart.ipynb").read_text()
