"""The throughput benchmark runs end to end and prints one JSON object per framework."""

import json

import pytest

from learngene_jax import bench
from learngene_jax.errors import UserError


@pytest.mark.torch
def test_forward_prints_json_per_framework(timm, capsys):
    bench.main(["forward", "--model", "levit_128s", "--batch", "2", "--img", "32", "--steps", "2", "--warmup", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["jax", "timm"]
    for r in rows:
        assert (r["device"], r["model"], r["batch"], r["img"]) == ("cpu", "levit_128s", 2, 32)
        assert r["step_ms"] > 0 and r["images_per_s"] == pytest.approx(2000 / r["step_ms"], rel=0.01)
    assert lines[0].startswith("same weights")


def test_forward_rejects_unknown_model():
    with pytest.raises(UserError, match="no timm counterpart"):
        bench.main(["forward", "--model", "vit_s", "--skip-timm"])


@pytest.mark.torch
@pytest.mark.parametrize("stage,extra", [("descendant", []), ("aux", ["--teacher", "levit_128s"])])
def test_train_step_prints_json_per_framework(timm, capsys, stage, extra):
    bench.main(["train-step", "--model", "vit_ti", "--stage", stage, "--depth", "2", "--img", "32", "--patch", "8",
                "--batch", "4", "--classes", "10", "--steps", "2", "--warmup", "0", *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["jax", "torch"]
    for r in rows:
        assert (r["device"], r["model"], r["stage"], r["batch"], r["img"]) == ("cpu", "vit_ti", stage, 4, 32)
        assert r["images_per_s"] == pytest.approx(4000 / r["step_ms"], rel=0.01) and r["step_gflop"] > 0
    assert any("jax/torch step-time ratio" in line for line in lines)


def test_train_step_rejects_bad_arguments():
    with pytest.raises(UserError, match="--model must be one of"):
        bench.main(["train-step", "--model", "levit_384", "--skip-torch"])
    with pytest.raises(UserError, match="not a multiple of --patch"):
        bench.main(["train-step", "--img", "30", "--patch", "8", "--skip-torch"])
    with pytest.raises(UserError, match="bf16 is for GPUs"):
        bench.main(["train-step", "--precision", "bf16", "--skip-torch"])
