"""Host memory for XLA's CPU backend: run the entry points with transparent huge pages for malloc's big blocks.

XLA's CPU client allocates each step's temporaries anew (589 MB for a ViT-Ti step at batch 64, 32², depth 6;
2.3 GB at 224², depth 12). glibc maps such a block with mmap and unmaps it after the step, so every step
faults it in again: 160,000 4-KiB page faults (~250 ms of system time) at 32². With
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc (≥ 2.35) advises transparent huge pages for these blocks: 2-MiB
faults (30× fewer in tests/test_hostmem.py). Measured on 2 cores, same session: train step 526 → 453 ms at 32²,
1906 → 1695 ms at 224², ViT-B gene expansion 76 → 47 ms. The tunable is read only at process start, so it is
set by whoever starts the process, never by re-executing: `bash launch/setup_venv.sh cpu` writes it into the venv's
activate script (`python -m learngene_jax.hostmem activate .venv/bin/activate`), a notebook kernel or a job
script sets it in its environment (`python -m learngene_jax.hostmem` prints the line), and `bench` passes it to
the processes it times. GPU and TPU hosts do not need it (their steps run on the accelerator).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from learngene_jax.errors import UserError, fail, run

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SWITCH = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_active() -> bool:
    """Whether this process runs with the huge-page tunable."""
    return TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def can_use_huge_pages() -> bool:
    """Linux with glibc ≥ 2.35 and transparent huge pages not switched off."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"; other C libraries have no such name
        if not libc.startswith("glibc ") or tuple(int(v) for v in libc.split()[1].split(".")[:2]) < (2, 35):
            return False
        return "[never]" not in _THP_SWITCH.read_text()
    except (OSError, ValueError, IndexError):
        return False


def environment_with_huge_pages(env: dict[str, str]) -> dict[str, str]:
    """`env` with the tunable appended to GLIBC_TUNABLES (kept as is when the user already sets it)."""
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{current}:{TUNABLE}" if current else TUNABLE}


MARKER = "# learngene_jax: transparent huge pages for malloc's big blocks (learngene_jax/hostmem.py)"


def export_line() -> str:
    """The shell line that adds the tunable when it is sourced (empty where it cannot help): the user's other
    tunables are kept, and a glibc.malloc.hugetlb the user already set wins."""
    if not can_use_huge_pages():
        return ""
    return ('case ":${GLIBC_TUNABLES:-}:" in *:glibc.malloc.hugetlb=*) ;; '
            f'*) export GLIBC_TUNABLES="${{GLIBC_TUNABLES:+$GLIBC_TUNABLES:}}{TUNABLE}" ;; esac')


def add_to_activate(path: str | Path) -> bool:
    """Append the export (once, marked) to a venv's activate script; False when it cannot help or is there."""
    path = Path(path)
    if not path.is_file():
        fail(UserError, f"{path}: no such activate script (create the venv first)")
    line = export_line()
    text = path.read_text()
    if not line or MARKER in text:
        return False
    path.write_text(text.rstrip("\n") + f"\n\n{MARKER}\n{line}\n")
    return True


def main(argv: list[str] | None = None) -> None:
    """`python -m learngene_jax.hostmem`: print the export line; `... activate PATH`: add it to a venv."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["activate"] and len(args) == 2:
        print(f"{args[1]}: {'added' if add_to_activate(args[1]) else 'unchanged'} ({TUNABLE})")
    elif not args:
        print(export_line())
    else:
        fail(UserError, "usage: python -m learngene_jax.hostmem [activate PATH_TO_VENV_ACTIVATE]")


if __name__ == "__main__":
    run(main)
