"""Transparent huge pages for malloc's big blocks (learngene_jax.hostmem): set by the launcher in the environment a
process starts with (the venv's activate script, bench's child processes), never by re-executing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from learngene_jax import hostmem

needs_thp = pytest.mark.skipif(not hostmem.can_use_huge_pages(), reason="needs Linux, glibc >= 2.35 and THP")


def _thp_mode(name: str) -> str:
    """The selected value of /sys/kernel/mm/transparent_hugepage/`name` ('' where it cannot be read)."""
    try:
        text = (Path("/sys/kernel/mm/transparent_hugepage") / name).read_text()
    except OSError:
        return ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


# The tunable only marks malloc's blocks MADV_HUGEPAGE: the fault counts differ only where THP is 'madvise' (under
# 'always' the defaults get huge pages too) and a madvised fault compacts memory for a huge page rather than falling
# back to 4 KiB pages on a fragmented machine (defrag 'defer' or 'never').
thp_madvise_only = pytest.mark.skipif(
    _thp_mode("enabled") != "madvise" or _thp_mode("defrag") not in {"always", "madvise", "defer+madvise"},
    reason="needs THP enabled=madvise and defrag that compacts for madvised regions")

# Prints the tunables, then the minor page faults of 6 calls that each return a fresh 64 MiB array.
FAULTS = """
import os, resource
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((4096, 4096), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    f(x).block_until_ready()
print(os.environ.get("GLIBC_TUNABLES", "-"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return out.split()


def test_tunable_is_appended_and_a_users_choice_kept():
    assert hostmem.environment_with_huge_pages({})["GLIBC_TUNABLES"] == hostmem.TUNABLE
    assert (hostmem.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=off"})["GLIBC_TUNABLES"]
            == "glibc.cpu.x86_shstk=off:" + hostmem.TUNABLE)
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hostmem.environment_with_huge_pages(mine) == mine


@needs_thp
@thp_madvise_only
def test_the_tunable_in_the_start_environment_gives_far_fewer_page_faults():
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    tunables, faults = _run(FAULTS, hostmem.environment_with_huge_pages(plain))
    none, system_faults = _run(FAULTS, plain)
    assert (tunables, none) == (hostmem.TUNABLE, "-")  # the process ran once, under what it was started with
    # 6 outputs of 64 MiB: ~98,000 4-KiB faults with glibc's defaults; with 2-MiB pages a few hundred
    assert int(system_faults) > 6 * 16384 * 0.8, system_faults
    assert int(faults) < int(system_faults) / 10, (faults, system_faults)


@needs_thp
def test_setup_writes_the_export_into_the_venv_activate_script_once(tmp_path):
    activate = tmp_path / "activate"
    activate.write_text("# a venv's activate script\nexport VIRTUAL_ENV=/x\n")
    for _ in range(2):  # idempotent: launch/setup_venv.sh may run again
        subprocess.run([sys.executable, "-m", "learngene_jax.hostmem", "activate", str(activate)], cwd=REPO,
                       check=True, capture_output=True, timeout=120)
    assert activate.read_text().count(hostmem.MARKER) == 1
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    for before, after in ((None, hostmem.TUNABLE),
                          ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the user's choice wins
                          ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:" + hostmem.TUNABLE)):  # others kept
        env = plain if before is None else {**plain, "GLIBC_TUNABLES": before}
        shell = subprocess.run(["bash", "-c", f". {activate}; echo $GLIBC_TUNABLES"], capture_output=True,
                               text=True, env=env, check=True)
        assert shell.stdout.strip() == after, (before, shell.stdout)


def test_a_missing_activate_script_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "learngene_jax.hostmem", "activate", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such activate script (create the venv first)"], proc.stderr


def test_entry_points_do_not_reexecute(tmp_path):
    """`main` runs in the process it was started in, whatever its environment (no interpreter re-exec)."""
    code = ("import os, sys; from learngene_jax import main; open(sys.argv[1], 'a').write(str(os.getpid()) + '\\n');"
            "sys.argv = ['main', '--helpshort']; main.run()")
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "pid")], cwd=REPO, timeout=300, capture_output=True,
                   env={**plain, "PYTHONPATH": str(REPO)})
    assert len((tmp_path / "pid").read_text().split()) == 1
