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
