"""The demo and baselines over several seeds: mean ± sample std, the claim check, resume, the results page and
one-line errors for bad seed lists (fixture: a smoke run of 2 seeds)."""

import json

import numpy as np
import pytest
from conftest import run_module

from learngene_jax import cli, results, seeds


@pytest.fixture(scope="module")
def seeds_workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("seeds") / "runs"
    run_module("learngene_jax.seeds", "--seeds", "0,1", "--workdir", str(work), "--smoke")
    return work


@pytest.mark.slow
def test_aggregates_are_mean_and_sample_std_of_each_seeds_files(seeds_workdir):
    data = json.loads((seeds_workdir / "seeds.json").read_text())
    assert data["seeds"] == [0, 1]
    rows = {(r["depth"], r["quantity"]): r for r in data["rows"]}
    summaries = [json.loads((seeds_workdir / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
    comparisons = [json.loads((seeds_workdir / f"seed{s}" / "comparison.json").read_text()) for s in (0, 1)]
    expected = {}
    for depth_rows in zip(*(s["descendants"] for s in summaries), strict=True):
        depth = depth_rows[0]["depth"]
        for label, key, field in (("TLEG init", "tleg", "init_top1"), ("TLEG 1 ep", "tleg", "top1"),
                                  ("SWS init", "sws", "init_top1"), ("SWS 1 ep", "sws", "top1"),
                                  ("scratch 1 ep", "scratch_x1", "top1"), ("scratch 2 ep", "scratch_x2", "top1")):
            expected[depth, label] = [r[key][field] for r in depth_rows]
    for c in comparisons[0]["rows"]:
        if c["method"] in ("weight selection", "pre-train → fine-tune"):
            expected[c["depth"], f"{c['method']} 1 ep"] = [
                next(r["top1"] for r in comp["rows"] if (r["depth"], r["method"]) == (c["depth"], c["method"]))
                for comp in comparisons]
    assert (2, "pre-train → fine-tune 1 ep") in expected and (1, "weight selection 1 ep") in expected
    assert set(rows) == set(expected)
    for key, values in expected.items():
        assert rows[key]["values"] == values
        assert rows[key]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert rows[key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert summaries[0]["descendants"] != summaries[1]["descendants"]  # the seed reached the stages

    md = (seeds_workdir / "seeds.md").read_text()
    tleg = rows[1, "TLEG 1 ep"]
    assert f"| 1 | TLEG 1 ep | {tleg['mean']:.3f} ± {tleg['std']:.3f} |" in md
    assert "Claim: a gene descendant after 1 epoch beats scratch after 2 epochs at every depth." in md
    assert "- TLEG: holds in " in md and "/2 seeds" in md and "Total wall time:" in md


@pytest.mark.slow
def test_rerun_reuses_every_stage_and_the_page_shows_the_seeds(seeds_workdir, tmp_path):
    run_module("learngene_jax.seeds", "--seeds", "0,1", "--workdir", str(seeds_workdir), "--smoke")
    for seed in (0, 1):
        stages = json.loads((seeds_workdir / f"seed{seed}" / "comparison.json").read_text())["stages"]
        assert all(s["reused"] for s in stages.values())
    command = f"python -m learngene_jax.seeds --seeds 0,1 --workdir {seeds_workdir} --smoke"
    assert (seeds_workdir / "commands.txt").read_text().splitlines() == [command, command]

    out = tmp_path / "results.md"
    results.main(["--workdir", str(seeds_workdir), "--base", str(seeds_workdir.parent), "--out", str(out)])
    page = out.read_text()
    data = json.loads((seeds_workdir / "seeds.json").read_text())
    assert seeds.seeds_table(data) in page and seeds.claim_lines(data) in page
    assert command in page and "| seed1/tleg_aux |" in page and "`runs/seed0/teacher/config.json`" in page


def _row(depth, tleg, sws, scratch):
    return {"depth": depth, "tleg": {"top1": tleg, "init_top1": 0.5, "epochs": 1},
            "sws": {"top1": sws, "init_top1": 0.4, "epochs": 1},
            "scratch_x1": {"top1": 0.2, "epochs": 1}, "scratch_x3": {"top1": scratch, "epochs": 3}}


def test_claim_is_counted_per_seed_and_method():
    summaries = {0: {"descendants": [_row(2, 0.9, 0.8, 0.7), _row(4, 0.9, 0.6, 0.7)]},
                 7: {"descendants": [_row(2, 0.9, 0.8, 0.7), _row(4, 0.7, 0.8, 0.7)]}}  # TLEG ties at depth 4
    claim = seeds.check_claim(summaries)
    assert claim["statement"] == "a gene descendant after 1 epoch beats scratch after 3 epochs at every depth"
    tleg, sws = claim["methods"]["TLEG"], claim["methods"]["SWS"]
    assert (tleg["holds_in"], tleg["seeds"], sws["holds_in"]) == (1, 2, 1)
    assert tleg["per_seed"] == {"0": {"holds": True, "fails_at_depths": []},
                                "7": {"holds": False, "fails_at_depths": [4]}}
    assert sws["per_seed"]["0"] == {"holds": False, "fails_at_depths": [4]} and sws["per_seed"]["7"]["holds"]
    lines = seeds.claim_lines({"claim": claim}).splitlines()
    assert lines[1:] == ["- TLEG: holds in 1/2 seeds (fails in seed 7 at depth 4)",
                         "- SWS: holds in 1/2 seeds (fails in seed 0 at depth 4)"]


@pytest.mark.parametrize("bad, message", [
    ("", "at least 2 seeds"), ("3", "at least 2 seeds"), ("0,x", "comma-separated integers"),
    ("0,,1", "comma-separated integers"), ("1.5,2", "comma-separated integers"),
    ("0,--1", "comma-separated integers"), ("²,³", "comma-separated integers"),
    ("0,1,0", "0 more than once")])
def test_bad_seed_lists_are_one_line_errors(bad, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(seeds.main, ["--seeds", bad, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: --seeds") and message in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "w").exists()


def test_negative_seed_through_the_command(tmp_path):
    proc = run_module("learngene_jax.seeds", "--seeds=-1,2", "--workdir", str(tmp_path / "w"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --seeds must be non-negative integers, got '-1,2'"
