"""Entry points re-execute once with transparent huge pages for malloc's big blocks (learngene_jax.hostmem)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from learngene_jax import hostmem

needs_thp = pytest.mark.skipif(not hostmem.can_use_huge_pages(), reason="needs Linux, glibc >= 2.35 and THP")

# Prints the tunables, then the minor page faults of 6 calls that each return a fresh 64 MiB array.
FAULTS = """
import os, resource, sys
from learngene_jax import hostmem
hostmem.reexec_with_huge_pages()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((4096, 4096), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    f(x).block_until_ready()
print(os.environ.get("GLIBC_TUNABLES", ""), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(code: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.ENV)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**base, "PYTHONPATH": str(REPO), **env},
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return out.split()


def test_tunable_is_appended_and_a_users_choice_kept():
    assert hostmem.environment_with_huge_pages({})["GLIBC_TUNABLES"] == hostmem.TUNABLE
    assert (hostmem.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=off"})["GLIBC_TUNABLES"]
            == "glibc.cpu.x86_shstk=off:" + hostmem.TUNABLE)
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hostmem.environment_with_huge_pages(mine) == mine


@needs_thp
def test_reexec_gives_huge_pages_and_far_fewer_page_faults():
    tunables, faults = _run(FAULTS)
    assert tunables == hostmem.TUNABLE  # re-executed once: the body ran a single time, under the tunable
    system_faults = int(_run(FAULTS, LEARNGENE_MALLOC="system")[-1])
    # 6 outputs of 64 MiB: ~98,000 4-KiB faults with glibc's defaults; with 2-MiB pages a few hundred
    assert system_faults > 6 * 16384 * 0.8, system_faults
    assert int(faults) < system_faults / 10, (faults, system_faults)


def test_opt_out_and_a_python_caller_keep_the_process(tmp_path):
    assert _run(FAULTS, LEARNGENE_MALLOC="system")[:-1] == []  # no tunable set, no re-exec
    pid_file = tmp_path / "pid"
    code = ("import os, sys; from learngene_jax import bench; open(sys.argv[1], 'a').write(str(os.getpid()) + '\\n');"
            "bench.main(['expand', '--size', 'ti', '--depth', '2', '--steps', '1', '--warmup', '0', '--skip-torch'])")
    subprocess.run([sys.executable, "-c", code, str(pid_file)], cwd=REPO, check=True, timeout=300, capture_output=True,
                   env={**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}, "PYTHONPATH": str(REPO)})
    assert len(pid_file.read_text().split()) == 1  # bench.main(argv) called from Python never re-executes


@pytest.mark.parametrize("command", [["learngene_jax.main", "--help"],
                                     ["learngene_jax.bench", "expand", "--size", "ti", "--skip-torch"]])
@pytest.mark.parametrize("tunables", [{}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}])  # also with the user's own
def test_a_misspelt_opt_out_is_a_one_line_error(command, tunables):
    proc = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), hostmem.ENV: "sytem", **tunables})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: LEARNGENE_MALLOC='sytem' is not a setting: use LEARNGENE_MALLOC=system to keep malloc as it is, "
        "or unset it"], proc.stderr
