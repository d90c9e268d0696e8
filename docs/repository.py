"""The repository URL is one setting, pyproject.toml's `[project.urls] Repository`: the docs build reads it (this
file is an mkdocs hook), and `python docs/repository.py` writes it into every Colab badge and notebook install line.

    python docs/repository.py           # rewrite the badges and install lines that name another repository
    python docs/repository.py --check   # list them (exit 1 if any)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Where the repository is named: the README, the docs pages, the notebooks.
PATTERNS = ("README.md", "docs/**/*.md", "notebooks/*.ipynb")
# A Colab badge's target, and a notebook's `pip install "learngene_jax @ git+URL"`: group 1 is OWNER/NAME.
COLAB = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/\w+/([\w./-]+\.ipynb)")
INSTALL = re.compile(r"git\+https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[\\\"'\s@#]|$)")


def repository_url(root: Path = ROOT) -> str:
    """`[project.urls] Repository` of pyproject.toml: https://github.com/OWNER/NAME."""
    url = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"pyproject.toml [project.urls] Repository must be https://github.com/OWNER/NAME, got {url}")
    return url


def owner_name(url: str) -> str:
    """'https://github.com/OWNER/NAME' → 'OWNER/NAME'."""
    return url.removeprefix("https://github.com/")


def named_files(root: Path = ROOT) -> list[Path]:
    """Every file that may name the repository."""
    return sorted({p for pattern in PATTERNS for p in root.glob(pattern) if p.is_file()})


def stale(root: Path = ROOT) -> list[str]:
    """'FILE: what' for every badge or install line naming another repository, and every badge of a missing
    notebook."""
    want = owner_name(repository_url(root))
    problems = []
    for path in named_files(root):
        text = path.read_text()
        name = path.relative_to(root)
        for match in COLAB.finditer(text):
            if match[1] != want:
                problems.append(f"{name}: Colab badge names {match[1]}, not {want}")
            if not (root / match[2]).is_file():
                problems.append(f"{name}: Colab badge opens {match[2]}, which does not exist")
        problems += [f"{name}: install line names {m[1]}, not {want}" for m in INSTALL.finditer(text) if m[1] != want]
    return problems


def rewrite(root: Path = ROOT) -> list[Path]:
    """Point every badge and install line at pyproject's repository; returns the files changed."""
    want = owner_name(repository_url(root))
    changed = []
    for path in named_files(root):
        text = path.read_text()
        new = COLAB.sub(lambda m: m[0].replace(m[1], want, 1), text)
        new = INSTALL.sub(lambda m: m[0].replace(m[1], want, 1), new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def on_config(config: Any) -> Any:
    """mkdocs hook: the site's repository link is pyproject's."""
    config.repo_url = repository_url()
    config.repo_name = owner_name(config.repo_url)
    return config


def main(argv: list[str]) -> int:
    """`--check`: list what names another repository (exit 1 if anything does); else rewrite it."""
    if argv == ["--check"]:
        problems = stale()
        print("\n".join(problems) or f"every badge and install line names {repository_url()}")
        return 1 if problems else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for path in rewrite():
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
