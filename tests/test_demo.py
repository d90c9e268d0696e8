"""The offline demo and the baselines harness end to end through `main` (tiny settings)."""

import json

import pytest
from conftest import run_module


@pytest.mark.slow
def test_demo_then_baselines_in_one_workdir(tmp_path):
    work = tmp_path / "demo"
    out = run_module("learngene_jax.main", "--config=configs/demo.py:smoke=True", f"--workdir={work}").stdout
    assert "| depth | params | TLEG params stored | SWS params stored |" in out
    summary = json.loads((work / "summary.json").read_text())
    assert [r["depth"] for r in summary["descendants"]] == [1, 2]
    row = summary["descendants"][1]
    assert {"tleg", "sws", "scratch_x1", "scratch_x2"} <= set(row)
    assert row["tleg"]["gene_params"] == summary["stages"]["tleg_aux"]["gene_params"]
    assert row["scratch_x2"]["epochs"] == 2 * row["scratch_x1"]["epochs"]
    assert set(summary["stages"]) == {"teacher", "tleg_aux", "sws_aux", "tleg_L1", "sws_L1", "scratch_L1_e1",
                                      "scratch_L1_e2", "tleg_L2", "sws_L2", "scratch_L2_e1", "scratch_L2_e2"}
    md = (work / "summary.md").read_text()
    assert "One-off cost of the genes" in md and "| tleg_aux |" in md
    assert (work / "summary.png").read_bytes()[:4] == b"\x89PNG"

    # the baselines harness reuses every finished demo stage and adds its own
    out = run_module("learngene_jax.main", "--config=configs/baselines.py:smoke=True", f"--workdir={work}").stdout
    comparison = json.loads((work / "comparison.json").read_text())
    stages = comparison["stages"]
    assert all(stages[name]["reused"] for name in ("teacher", "tleg_aux", "sws_aux", "scratch_L1_e1", "tleg_L2"))
    assert not stages["ancestor_L2"]["reused"] and not stages["wsel_L1"]["reused"]
    methods = {(r["depth"], r["method"]) for r in comparison["rows"]}
    assert (2, "pre-train → fine-tune") in methods and (1, "pre-train → fine-tune") not in methods
    assert {(1, "weight selection"), (2, "TLEG"), (2, "SWS"), (1, "scratch")} <= methods
    stored = {r["method"]: r["stored"] for r in comparison["rows"] if r["depth"] == 2}
    assert stored["scratch"] == 0 and stored["TLEG"] == summary["stages"]["tleg_aux"]["gene_params"]
    assert "| depth | method | params | params stored for init |" in out
