"""The results page is regenerated from workdirs (fixture: a smoke run of the demo and baselines)."""

from conftest import DATA, run_module

FIXTURE = DATA / "results_fixture"


def test_results_page_regenerates_from_fixture_workdirs(tmp_path):
    out = tmp_path / "results.md"
    run_module("learngene_jax.results", "--workdir", str(FIXTURE / "demo"), "--base", str(FIXTURE), "--out", str(out))
    assert out.read_text() == (FIXTURE / "expected.md").read_text()


def test_page_sections_trace_to_configs_and_commands(tmp_path):
    out = tmp_path / "results.md"
    run_module("learngene_jax.results", "--workdir", str(FIXTURE / "demo"), "--base", str(FIXTURE), "--out", str(out))
    page = out.read_text()
    assert "python -m learngene_jax.main --config=configs/demo.py:smoke=True" in page
    assert "| tleg_aux | 0.1000 | 21 |" in page and "`demo/tleg_aux/config.json`" in page
    assert "| 2 | pre-train → fine-tune | 27,882 | 27,882 |" in page
    assert "| qkv/kernel | 4 | 0.3539 | 0.3286 |" in page


def test_missing_workdir_is_one_line(tmp_path):
    proc = run_module("learngene_jax.results", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md"),
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no workdir at {tmp_path / 'nope'}"
