"""The throughput benchmark: each framework timed in its own processes (A/B/A/B), one JSON object per framework;
the LM train step against transformers on the same model; the input benchmark on a folder from make_folder; the GPU
benchmark script's CPU smoke run."""

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from conftest import REPO, run_module

from learngene_jax import data
from learngene_jax.bench import input_pipeline, lm_train_step, report, runner, train_step
from learngene_jax.bench.__main__ import build_parser, main
from learngene_jax.data import make_folder
from learngene_jax.errors import UserError
from learngene_jax.objectives.language import token_cross_entropy

# A tiny decoder: grouped-query attention (2 heads, 1 kv head), 2 layers, 2 windows of 16 tokens.
LM_TINY = ["--depth", "2", "--width", "32", "--heads", "2", "--kv-heads", "1", "--mlp-dim", "48", "--vocab", "64",
           "--batch", "2", "--context", "16"]
LOSS_TOLERANCE = 1e-5  # JAX and PyTorch agree to ~1e-6 here; a query kernel left untransposed moves step 0 by 5e-5


@pytest.mark.torch
def test_forward_prints_json_per_framework(timm, capsys):
    main(["forward", "--model", "levit_128s", "--batch", "2", "--img", "32", "--steps", "2", "--warmup", "0",
                "--rounds", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["jax", "timm"]
    for r in rows:
        assert (r["device"], r["model"], r["batch"], r["img"], r["rounds"]) == ("cpu", "levit_128s", 2, 32, 1)
        assert r["step_ms"] > 0 and r["images_per_s"] == pytest.approx(2000 / r["step_ms"], rel=0.01)
        assert r["step_ms_spread"] == [r["step_ms"], r["step_ms"]]
    assert lines[0].startswith("same weights")


def test_forward_rejects_unknown_model():
    with pytest.raises(UserError, match="no timm counterpart"):
        main(["forward", "--model", "vit_s", "--skip-timm"])


@pytest.mark.torch
@pytest.mark.parametrize("stage,extra,rounds", [("descendant", [], 2), ("aux", ["--teacher", "levit_128s"], 1)])
def test_train_step_prints_json_per_framework(timm, capsys, stage, extra, rounds):
    main(["train-step", "--model", "vit_ti", "--stage", stage, "--depth", "2", "--img", "32", "--patch", "8",
                "--batch", "4", "--classes", "10", "--steps", "2", "--warmup", "0", "--rounds", str(rounds), *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["jax", "torch"]
    for r in rows:
        assert (r["device"], r["model"], r["stage"], r["batch"], r["img"]) == ("cpu", "vit_ti", stage, 4, 32)
        assert r["images_per_s"] == pytest.approx(4000 / r["step_ms"], rel=0.01) and r["step_gflop"] > 0
        assert r["rounds"] == len(r["step_ms_rounds"]) == rounds
        assert r["step_ms_spread"] == [min(r["step_ms_rounds"]), max(r["step_ms_rounds"])]
    low, high = rows[0]["step_time_ratio_vs_torch_spread"]
    assert low <= rows[0]["step_time_ratio_vs_torch"] <= high
    assert any(line.startswith("jax/torch step-time ratio") for line in lines)


def lm_config(*argv):
    return lm_train_step.lm_config(build_parser().parse_args(["lm-train-step", *argv]))


@pytest.mark.torch
def test_lm_train_step_times_both_frameworks_on_the_same_model(timm, capsys):
    """The trainer's step on the Flax Llama and the PyTorch step on transformers' LlamaForCausalLM, each in its own
    process, start from the same loss and stay together after two updates of the same optimizer; a decoder that
    differs only in one untransposed kernel is further off at step 0 than the tolerance, so the check resolves a
    conversion slip (1e-4 would not)."""
    main(["lm-train-step", *LM_TINY, "--steps", "2", "--warmup", "0", "--rounds", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["jax", "torch"]
    for r in rows:
        assert (r["device"], r["model"], r["depth"], r["width"], r["heads"], r["kv_heads"], r["mlp_dim"], r["vocab"],
                r["batch"], r["context"], r["precision"], r["rounds"]) == (
                    "cpu", "llama", 2, 32, 2, 1, 48, 64, 2, 16, "fp32", 1)
        assert r["tokens_per_s"] == pytest.approx(2 * 16 * 1000 / r["step_ms"], rel=0.01) and "images_per_s" not in r
        assert r["step_ms_spread"] == [r["step_ms"], r["step_ms"]] and r["last_step"] == 2
    jax_row, torch_row = rows
    assert jax_row["loss_step0"] == pytest.approx(torch_row["loss_step0"], abs=LOSS_TOLERANCE)
    assert jax_row["loss_last"] == pytest.approx(torch_row["loss_last"], abs=LOSS_TOLERANCE)
    assert jax_row["loss_last"] < jax_row["loss_step0"] - 0.1  # the optimizer really stepped
    low, high = jax_row["step_time_ratio_vs_torch_spread"]
    assert low <= jax_row["step_time_ratio_vs_torch"] <= high
    assert any(line.startswith("jax/torch step-time ratio") for line in lines)
    assert any(line.startswith("loss at step 0 / step 2: jax") for line in lines)
    assert "tokens/s" in next(line for line in lines if line.startswith("framework"))
    # the negative control: the same decoder with its query kernels untransposed (square here)
    config = lm_config(*LM_TINY)
    model, tokens = lm_train_step.lm_model(config), lm_train_step.lm_tokens(config)
    params = lm_train_step.lm_params(model)

    def loss(p):
        return float(jnp.mean(token_cross_entropy(model.apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])))

    assert loss(params) == pytest.approx(jax_row["loss_step0"], abs=LOSS_TOLERANCE)
    slipped = {**params, "layers": {**params["layers"], "q": params["layers"]["q"].swapaxes(1, 2)}}
    assert abs(loss(slipped) - loss(params)) > LOSS_TOLERANCE


def test_lm_flop_count_is_xla_count_of_an_unrolled_decoder():
    """The MFU's FLOPs (6 per weight per token + attention) against XLA's count of the whole unrolled step, which
    adds the elementwise work (measured +1.6% at the LM demo's size)."""
    from learngene_jax.optim import build_optimizer, lr_schedule
    from learngene_jax.train import make_train_step

    config = lm_config("--depth", "2", "--batch", "2")
    model = lm_train_step.lm_model(config).clone(scan_unroll=True)  # no loop: XLA counts every layer
    schedule = lr_schedule(config.optim, 2, 1, 1)
    tx = build_optimizer(config.optim, schedule)
    params = lm_train_step.lm_params(model)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    step_fn = make_train_step(config, model, tx, schedule, None, model.vocab_size, 1, jax.random.key(0))
    _, xla_flops, _ = train_step.compiled_step(step_fn, state, {"tokens": lm_train_step.lm_tokens(config)}, {})
    assert lm_train_step.lm_train_flops(model, 2, 128) == pytest.approx(xla_flops, rel=0.05)


def test_lm_train_step_rejects_bad_arguments():
    with pytest.raises(UserError, match="not a multiple of --kv-heads 2"):
        main(["lm-train-step", "--heads", "3", "--kv-heads", "2", "--skip-torch"])
    with pytest.raises(UserError, match="lm-train-step times the llama decoder"):
        main(["lm-train-step", "--config", "configs/tleg_s.py", "--skip-torch"])
    with pytest.raises(UserError, match="--kv-heads must be >= 1"):
        main(["lm-train-step", "--kv-heads", "0", "--skip-torch"])
    with pytest.raises(UserError, match="bf16 is for GPUs"):
        main(["lm-train-step", "--precision", "bf16", "--skip-torch"])


def test_rounds_alternate_and_ratios_pair_by_pair(monkeypatch):
    """A/B/A/B, one process each; the ratio is the median of same-round pairs, not the ratio of medians."""
    step_ms = {"jax": [10.0, 20.0, 30.0], "torch": [20.0, 5.0, 10.0]}
    calls = []

    def child(argv, framework):
        calls.append(framework)
        if framework == "torch_compile":
            return None, 1, "RuntimeError: out of memory"
        ms = step_ms[framework][calls.count(framework) - 1]
        return {"framework": framework, "batch": 4, "images_per_s": 4000 / ms, "step_ms": ms, "step_ms_min": ms}, 0, ""

    monkeypatch.setattr(runner, "_run_child", child)
    results, failures = runner.run_rounds([], ["jax", "torch", "torch_compile"], 3, report.describe_step)
    assert calls == ["jax", "torch", "torch_compile", "jax", "torch", "jax", "torch"]  # a failed one is not rerun
    assert failures == ["torch_compile failed (exit 1): RuntimeError: out of memory"]
    jax_row, torch_row = report.combine(results, "step_ms")
    assert (jax_row["step_ms"], torch_row["step_ms"]) == (20.0, 10.0)  # medians over rounds
    assert torch_row["step_ms_spread"] == [5.0, 20.0] and torch_row["images_per_s"] == 400.0
    assert jax_row["step_time_ratio_vs_torch"] == 3.0  # pairs 0.5, 4, 3 (the medians' ratio would say 2)
    assert jax_row["step_time_ratio_vs_torch_spread"] == [0.5, 4.0]


def test_a_user_error_in_every_child_is_one_line(monkeypatch):
    monkeypatch.setattr(runner, "_run_child", lambda argv, framework: (None, 2, "JAX sees no gpu device"))
    with pytest.raises(UserError, match="JAX sees no gpu device"):
        runner.run_rounds([], ["jax", "torch"], 2, report.describe_step)


def test_train_step_rejects_bad_arguments():
    with pytest.raises(UserError, match="--model must be one of"):
        main(["train-step", "--model", "levit_384", "--skip-torch"])
    with pytest.raises(UserError, match="not a multiple of --patch"):
        main(["train-step", "--img", "30", "--patch", "8", "--skip-torch"])
    with pytest.raises(UserError, match="bf16 is for GPUs"):
        main(["train-step", "--precision", "bf16", "--skip-torch"])
    with pytest.raises(UserError, match="--rounds must be >= 1"):
        main(["train-step", "--rounds", "0", "--skip-torch"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 64-image folder from make_folder (small images: the transform crops them anyway)."""
    out = tmp_path_factory.mktemp("bench") / "folder"
    make_folder.main(["--out", str(out), "--count", "64", "--size", "160x120"])
    return out


def test_input_rejects_bad_arguments(folder, tmp_path):
    with pytest.raises(UserError, match="--data must be folder:DIR"):
        main(["input", "--data", str(folder)])
    with pytest.raises(UserError, match="make_folder --out"):
        main(["input", "--data", f"folder:{tmp_path}"])
    with pytest.raises(UserError, match="no such file"):
        main(["input", "--data", f"folder:{folder}", "--config", "configs/nope.py"])
    with pytest.raises(UserError, match="--workers and --warmup must be >= 0"):
        main(["input", "--data", f"folder:{folder}", "--workers", "-1"])


@pytest.mark.torch
@pytest.mark.parametrize("workers", [0, 2])
def test_input_prints_json_per_framework(timm, folder, workers):
    out = run_module("learngene_jax.bench", "input", "--data", f"folder:{folder}", "--workers", str(workers),
                     "--batch", "16", "--steps", "2", "--warmup", "1", "--img", "64", "--rounds", "1").stdout
    lines = out.strip().splitlines()
    rows = [json.loads(line) for line in lines[-2:]]
    assert [r["framework"] for r in rows] == ["learngene_jax", "timm"]
    for r in rows:
        assert (r["workers"], r["batch"], r["img"], r["rounds"]) == (workers, 16, 64, 1)
        assert r["images_per_s"] > 0 and r["cores_busy"] >= 0 and r["peak_rss_mb"] > 0
        assert "rand-m9-n2-mstd0.5-inc1" in r["transform"]
    if workers:  # timm's DataLoader workers are this many child processes
        assert rows[1]["child_processes"] >= workers and rows[1]["peak_worker_rss_mb"] > 0
    # bytes per image: what one of our batches holds, as the loader yields it; timm: float32 CHW + int64 label
    args = argparse.Namespace(config=input_pipeline.DEFAULT_CONFIG, data=f"folder:{folder}", workers=0, img=64)
    config = input_pipeline.input_config(args)
    loader = data.make_loader(config, config.data.train_split, train=True, batch_size=16)
    batch = next(iter(loader.epoch(0)))
    getattr(loader, "close", lambda: None)()
    assert rows[0]["bytes_per_image"] == sum(v.nbytes for v in batch.values()) / 16
    assert rows[1]["bytes_per_image"] == 3 * 64 * 64 * 4 + 8
    assert any(line.startswith("learngene_jax/timm images/s ratio") for line in lines)
    assert any(line.startswith("note: timm's RandAugment posterize is patched") for line in lines)


def test_gpu_bench_script_dry_run():
    assert subprocess.run(["bash", "-n", "launch/gpu_bench.sh"], cwd=REPO).returncode == 0
    proc = subprocess.run(["bash", "launch/gpu_bench.sh"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "PYTHON": "python"})
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.splitlines()
    assert ("python -m learngene_jax.bench train-step --device gpu --stage aux --teacher levit_384 --model vit_s "
            "--img 224 --patch 16 --depth 12 --batch 256 --precision bf16 --compile") in "\n".join(commands)
    assert ("python -m learngene_jax.bench lm-train-step --device gpu --width 768 --depth 12 --heads 12 --kv-heads 12 "
            "--mlp-dim 2048 --vocab 32000 --batch 8 --context 1024 --precision bf16") in "\n".join(commands)
    inputs = [c for c in commands if "learngene_jax.bench input " in c]
    assert [c.split("--workers ")[1].split()[0] for c in inputs] == ["4", "8", "16"]


@pytest.mark.torch
def test_gpu_bench_script_cpu_smoke_run(timm, tmp_path):
    """DEVICE=cpu runs every step with tiny settings and writes one JSON file (nvidia-smi fails here: recorded)."""
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable}
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "").strip()
    proc = subprocess.run(["bash", "launch/gpu_bench.sh", str(tmp_path / "bench.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    steps = {s["name"]: s for s in result["steps"]}
    for name in ("jax_info", "make_folder", "train_step_aux", "lm_train_step", "input_w1"):
        assert steps[name]["exit"] == 0, steps[name]
    assert [r["framework"] for r in steps["train_step_aux"]["rows"]] == ["jax", "torch"]
    assert [r["framework"] for r in steps["lm_train_step"]["rows"]] == ["jax", "torch"]
    assert [r["framework"] for r in steps["input_w1"]["rows"]] == ["learngene_jax", "timm"]
    assert len(result["rows"]) == 6 and result["info"]["jax"]
