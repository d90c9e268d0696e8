"""Host memory for XLA's CPU backend: run the entry points with transparent huge pages for malloc's big blocks.

XLA's CPU client allocates each step's temporaries anew (589 MB for a ViT-Ti step at batch 64, 32², depth 6;
2.3 GB at 224², depth 12). glibc maps such a block with mmap and unmaps it after the step, so every step
faults it in again: 160,000 4-KiB page faults (~250 ms of system time) at 32². With
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc (≥ 2.35) advises transparent huge pages for these blocks: 2-MiB
faults (30× fewer in tests/test_hostmem.py). Measured on 2 cores, same session: train step 526 → 453 ms at 32²,
1906 → 1695 ms at 224², ViT-B gene expansion 76 → 47 ms. The tunable is read only at process start, so an entry
point re-executes itself once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from learngene_jax.errors import UserError, fail

TUNABLE = "glibc.malloc.hugetlb=1"
ENV = "LEARNGENE_MALLOC"  # "system": leave malloc as it is (no re-exec)
_THP_SWITCH = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_active() -> bool:
    """Whether this process runs with the huge-page tunable."""
    return TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def opted_out() -> bool:
    """Whether LEARNGENE_MALLOC=system asks to leave malloc alone (any other value is a mistake)."""
    value = os.environ.get(ENV, "")
    if value not in ("", "system"):
        fail(UserError, f"{ENV}={value!r} is not a setting: use {ENV}=system to keep malloc as it is, or unset it")
    return value == "system"


def can_use_huge_pages() -> bool:
    """Linux with glibc ≥ 2.35 and transparent huge pages not switched off, and the user did not opt out."""
    if opted_out() or not sys.platform.startswith("linux"):  # a misspelt opt-out is an error on any platform
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


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command with the tunable set, once; returns when there is nothing to do
    (already set, opted out with LEARNGENE_MALLOC=system, or not Linux/glibc ≥ 2.35 with THP)."""
    if not can_use_huge_pages():  # first: it also rejects a misspelt LEARNGENE_MALLOC
        return
    current = dict(os.environ)
    env = environment_with_huge_pages(current)
    if env == current or not sys.executable:  # set already, or by the user
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # cannot start the interpreter again (sandboxes): carry on with malloc as it is
        return
