"""The trainer: every stage end to end on digits, the frozen teacher, resume after a kill, NaN stop, errors."""

import json
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_module
from helpers import tiny_train_config

from learngene_jax import checkpointing
from learngene_jax.errors import ConfigError
from learngene_jax.genes.io import load_gene
from learngene_jax.models.io import load_model
from learngene_jax.objectives.teacher import Teacher
from learngene_jax.train import Diverged, Preempted, check_sizes, train


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """teacher (CNN) → TLEG aux distilled from it (gene) → depth-3 descendant fine-tuned from the gene."""
    root = tmp_path_factory.mktemp("chain")
    teacher = train(tiny_train_config(**{"model": {"name": "cnn", "widths": (32, 64)}, "epochs": 2}),
                    root / "teacher")
    aux_cfg = tiny_train_config(**{"model.name": "tleg_aux", "distill.type": "soft", "distill.alpha": 0.7,
                                   "distill.teacher_init": teacher["model_dir"], "epochs": 3, "optim.lr": 3e-3})
    aux = train(aux_cfg, root / "aux")
    des_cfg = tiny_train_config(**{"model": {"name": "descendant"}, "gene": aux["gene"], "depth": 3,
                                   "eval_at_start": True})
    des = train(des_cfg, root / "des")
    return root, teacher, aux, des


def test_every_stage_runs_and_reports(chain):
    root, teacher, aux, des = chain
    for name, out in (("teacher", teacher), ("aux", aux), ("des", des)):
        assert out["steps"] == out["epochs"] * (1347 // 64)
        rows = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
        assert {"train", "eval"} <= {r["split"] for r in rows}
        assert all(np.isfinite(r["loss"]) for r in rows)
        assert (root / name / "tb").is_dir() and (root / name / "final.json").exists()
        assert 0.0 <= out["top1"] <= out["top5"] <= 1.0
    assert teacher["top1"] > 0.6  # a CNN learns digits in two epochs of 21 steps (seeds 0/1/2: 0.929/0.940/0.913)
    gene = load_gene(aux["gene"])
    assert gene.meta.method == "tleg" and aux["gene_params"] == sum(x.size for x in jax.tree.leaves(gene.params))
    assert des["origin"].startswith("gene:") and "init" in des
    model, _ = load_model(des["model_dir"])
    assert (model.depth, model.final_norm, model.eps) == (3, "fc_norm", 1e-6)


def test_teacher_is_not_in_the_checkpoint(chain):
    root, _, aux, _ = chain
    ckpt = checkpointing.TrainCheckpoints(root / "aux" / "checkpoints")
    step = ckpt.latest_step()
    stored = json.loads((root / "aux" / "checkpoints" / str(step) / "state" / "_METADATA").read_text())
    keys = {k.split("'")[1] for k in stored["tree_metadata"]}
    assert keys == {"step", "params", "opt_state"}
    ckpt.close()
    model, variables = load_model(aux["model_dir"])
    assert set(variables) == {"params"} and type(model).__name__ == "TLEGAux"


def test_teacher_gets_no_gradient(chain):
    _, teacher_out, _, _ = chain
    model, variables = load_model(teacher_out["model_dir"])
    teacher = Teacher(model, variables)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    grads = jax.grad(lambda v: jnp.sum(teacher.logits(v, x) ** 2))(variables)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    assert float(jnp.abs(teacher.logits(variables, x)).max()) > 0  # eval mode, running statistics


def test_gene_initialised_descendant_starts_from_the_gene(chain):
    _, _, aux, des = chain
    untrained = des["init"]["top1"]
    # the gene already classifies before any descendant training: well above the 10% of chance, and about as well
    # as its aux model (chain seeds 0/1/2 measured: init 0.311/0.251/0.280, aux 0.344/0.273/0.318)
    assert untrained > 0.2, untrained
    assert abs(untrained - aux["top1"]) < 0.15
    # and, whatever the draws: the descendant the trainer builds is the gene's expansion at depth 3, whichever key
    # it is initialised with (jit may fuse θ_B + c·θ_A into one rounding: float32 tolerance)
    from learngene_jax import genes
    from learngene_jax.train import build_student

    student = build_student(tiny_train_config(**{"model": {"name": "descendant"}, "gene": aux["gene"], "depth": 3}),
                            10)
    built = jax.jit(student.init)(jax.random.key(7), student.source)["params"]
    want = genes.expand(load_gene(aux["gene"]), 3)
    assert jax.tree.structure(built) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(built), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_finished_run_is_not_retrained(chain):
    root, _, _, _ = chain
    before = (root / "teacher" / "metrics.jsonl").read_text()
    again = train(tiny_train_config(**{"model": {"name": "cnn", "widths": (32, 64)}, "epochs": 2}),
                  root / "teacher")
    assert again["steps"] == 2 * (1347 // 64)
    after = (root / "teacher" / "metrics.jsonl").read_text()
    assert [r for r in after.splitlines() if '"train"' in r] == [r for r in before.splitlines() if '"train"' in r]


def test_gene_whose_width_does_not_match_the_config(chain, tmp_path):
    _, _, aux, _ = chain
    cfg = tiny_train_config(**{"model": {"name": "descendant", "width": 64}, "gene": aux["gene"], "depth": 2})
    with pytest.raises(ConfigError, match="has width=32 but config.model.width=64"):
        train(cfg, tmp_path / "w")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_train_config(**{"optim.lr": 1e30, "optim.name": "sgd", "optim.momentum": 0.0,
                               "checkpoint.every_steps": 1, "log_every_steps": 1})
    with pytest.raises(Diverged, match="the loss became nan at step .*the last good checkpoint") as e:
        train(cfg, tmp_path / "nan")
    assert "\n" not in str(e.value)
    ckpt = checkpointing.TrainCheckpoints(tmp_path / "nan" / "checkpoints")
    assert ckpt.latest_step() is not None and ckpt.latest_step() >= 1
    ckpt.close()


def _main_args(workdir, *extra):
    return ["--config=configs/digits_vit.py:depth=2,epochs=2", f"--workdir={workdir}",
            "--config.model.width=32", "--config.model.num_heads=2", "--config.model.scan_layers=True",
            "--config.batch_size=32", "--config.log_every_steps=1", "--config.checkpoint.every_steps=7",
            "--config.data.workers=1", *extra]


def _final_params(workdir):
    _, variables = load_model(workdir / "model")
    return jax.tree.leaves(variables)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_kill_and_resume_gives_identical_params(tmp_path, sig):
    """Killed mid-epoch (42 steps an epoch, checkpoints every 7), with a worker process feeding the batches and
    the grain iterator state restored from the checkpoint: the same final params, to the bit. The process signals
    itself after step 10 (tests/signal_at_step.py), so the kill lands mid-training on every machine."""
    straight = tmp_path / "straight"
    run_module("learngene_jax.main", *_main_args(straight))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "").strip()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "signal_at_step.py"), "10", sig.name,
                           *_main_args(killed)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if sig == signal.SIGTERM:
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: stopped by a preemption notice (SIGTERM) at step")
        assert "run the same command" in last
        stopped = int(last.split(" at step ")[1].split(";")[0])
        assert 10 <= stopped < 84
        assert stopped in checkpointing.TrainCheckpoints(killed / "checkpoints")._manager.all_steps()
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.json").exists()
    run_module("learngene_jax.main", *_main_args(killed))
    for a, b in zip(_final_params(straight), _final_params(killed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((killed / "final.json").read_text())["top1"] == \
        json.loads((straight / "final.json").read_text())["top1"]


@pytest.mark.parametrize("extra,message", [
    (["--config.optim.weight_decy=0.1"], "error: unknown config key 'weight_decy' (did you mean 'weight_decay'?)"),
    (["--config.data.name=cifar100", "--config.data.data_dir=/nonexistent/tfds"],
     "error: dataset 'cifar100' is not prepared in /nonexistent/tfds: prepare it with `tfds build cifar100 "
     "--data_dir /nonexistent/tfds --file_format=array_record` (or point --config.data.data_dir at the directory "
     "that has it)"),
    (["--config.gene=/nonexistent/gene", "--config.depth=2"], "error: no gene at /nonexistent/gene: check the path"),
    (["--config.distill.type=soft"], "error: distill.type='soft' needs teacher weights: pass "
     "--config.distill.teacher_init=MODEL_DIR (a model directory from `python -m learngene_jax.convert from-timm` "
     "or from a teacher run's WORKDIR/model), or --config.distill.type=none"),
])
def test_bad_input_is_one_clear_line(tmp_path, extra, message):
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w", *extra), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("extra,message", [
    (["--config.batch_size=0"], "config.batch_size must be a whole number >= 1, got 0"),
    (["--config.eval_batch_size=-4"], "config.eval_batch_size must be a whole number >= 0 (0: the batch_size), got -4"),
    (["--config.max_steps=-1"], "config.max_steps must be a whole number >= 0 (0: no cap), got -1"),
])
def test_batch_sizes_and_step_cap_are_checked_before_any_data(extra, message):
    key, value = extra[0].removeprefix("--config.").split("=")
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_sizes(tiny_train_config(**{key: int(value)}))


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "w").write_text("not a folder")
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w"), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1] == f"error: --workdir {tmp_path / 'w'}: a file is in the way (it or a folder above it is a " \
                        f"file); give a folder"


@pytest.mark.parametrize("classes,kind", [(100, "soft"), (5, "hard"), (0, "soft")])
def test_teacher_of_another_label_set_is_one_line_before_compiling(tmp_path, classes, kind):
    """A converted teacher trained on 100 (or 5, or no) classes for the 10-class digits: refused up front (soft KD
    broadcast, hard KD gave NaNs with 100 and meaningless targets with 5)."""
    from learngene_jax.models import create_model
    from learngene_jax.models.io import save_model

    teacher = create_model("vit", num_classes=classes, image_size=16, patch_size=4, width=16, depth=1, num_heads=1)
    variables = jax.jit(teacher.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    save_model(tmp_path / "teacher", teacher, variables)
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w", f"--config.distill.type={kind}",
                                                        f"--config.distill.teacher_init={tmp_path / 'teacher'}"),
                      check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = (f"error: the teacher at {tmp_path / 'teacher'} predicts {classes} classes but the data has 10: its "
                "logits are the distillation targets, so it must be trained on the same label set (fine-tune its "
                "head on this data first, or distil on its data)") if classes else (
        f"error: the teacher at {tmp_path / 'teacher'} has no classification head (num_classes=0) but the data "
        "has 10 classes: its logits are the distillation targets; give it a head trained on this label set")
    assert proc.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_init_from_another_image_size_or_without_a_head(tmp_path):
    """`--config.init` from a ViT trained at 32 px (16 px digits here: position table resampled, said in the
    log) and from a headless one (timm num_classes=0: a fresh head); every other array kept."""
    import jax.image

    from learngene_jax.models import create_model
    from learngene_jax.models.io import save_model
    from learngene_jax.train import build_student

    for name, classes, size in (("big", 10, 32), ("headless", 0, 16)):
        model = create_model("vit", num_classes=classes, image_size=size, patch_size=4, width=32, depth=2,
                             num_heads=2, class_token=True, pool="token", final_norm="norm")
        variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, size, size, 3)))
        save_model(tmp_path / name, model, variables)
        config = tiny_train_config(init=str(tmp_path / name))
        student = build_student(config, 10)
        assert (student.model.image_size, student.model.num_classes) == (16, 10)
        got = jax.jit(student.init)(jax.random.key(0), student.source)["params"]
        old = variables["params"]
        np.testing.assert_array_equal(got["blocks"]["qkv"]["kernel"], old["blocks"]["qkv"]["kernel"])
        np.testing.assert_array_equal(got["cls_token"], old["cls_token"])
        if name == "big":  # 8×8 grid → 4×4, class-token row kept, as timm's resample_abs_pos_embed
            grid = old["pos_embed"][:, 1:].reshape(1, 8, 8, 32)
            want = jax.image.resize(grid, (1, 4, 4, 32), "bicubic").reshape(1, 16, 32)
            np.testing.assert_allclose(got["pos_embed"][:, 1:], want, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(got["pos_embed"][:, :1], old["pos_embed"][:, :1])
        else:
            assert got["head"]["kernel"].shape == (32, 10) and "head" not in old
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w", f"--config.init={tmp_path / 'big'}",
                                                        "--config.model.patch_size=4"))
    assert "resampled its position embeddings from a 8×8 to a 4×4 grid" in proc.stderr  # a log line (absl, process 0)
    trained, variables = load_model(tmp_path / "w" / "model")
    assert trained.image_size == 16 and variables["params"]["pos_embed"].shape == (1, 17, 32)
    assert np.isfinite(json.loads((tmp_path / "w" / "final.json").read_text())["loss"])


def test_resume_with_another_batch_size_is_refused_and_the_record_kept(tmp_path):
    run_module("learngene_jax.main", *_main_args(tmp_path / "w", "--config.max_steps=8"))
    before = (tmp_path / "w" / "config.json").read_text()
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w", "--config.batch_size=16"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'w'} holds checkpoints of a run with batch_size=32 (its config.json); resuming with "
        "batch_size=16 would reinterpret their step count: rerun with --config.batch_size=32, or use a new workdir")
    assert (tmp_path / "w" / "config.json").read_text() == before


def test_gene_width_mismatch_through_main(chain, tmp_path):
    _, _, aux, _ = chain
    proc = run_module("learngene_jax.main", *_main_args(tmp_path / "w", f"--config.gene={aux['gene']}",
                                                        "--config.depth=2", "--config.model.width=48"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: gene {aux['gene']} has width=32 but config.model.width=48; drop the override or use a gene that "
        "matches")


def test_bfloat16_compute_keeps_float32_params(tmp_path):
    out = train(tiny_train_config(precision="bfloat16"), tmp_path / "bf16")
    assert np.isfinite(out["loss"])
    _, variables = load_model(out["model_dir"])
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))


def test_ewc_penalty_pulls_towards_the_anchor(tmp_path):
    from learngene_jax.methods.heur.ewc import ewc_penalty, save_ewc

    params = {"a": {"kernel": jnp.ones((2, 3))}, "b": jnp.zeros(4)}
    anchor = {"a": {"kernel": jnp.ones((2, 3))}}
    fisher = {"a": {"kernel": jnp.full((2, 3), 2.0)}}
    assert float(ewc_penalty(params, anchor, fisher)) == 0.0  # zero at the anchor
    moved = {"a": {"kernel": jnp.ones((2, 3)) + 0.5}, "b": jnp.full(4, 9.0)}
    assert float(ewc_penalty(moved, anchor, fisher)) == pytest.approx(6 * 2.0 * 0.25)  # b is not anchored
    further = {"a": {"kernel": jnp.ones((2, 3)) + 1.0}, "b": jnp.zeros(4)}
    assert float(ewc_penalty(further, anchor, fisher)) > float(ewc_penalty(moved, anchor, fisher))
    save_ewc(tmp_path / "ewc", anchor, fisher)


def test_training_with_ewc_stays_near_the_anchor(chain, tmp_path):
    """A descendant trained with a strong EWC penalty on its blocks moves them less than one without."""
    from learngene_jax.methods.heur.ewc import save_ewc

    _, _, aux, _ = chain
    base = {"model": {"name": "descendant"}, "gene": aux["gene"], "depth": 2, "optim.lr": 3e-3}
    free = train(tiny_train_config(**base), tmp_path / "free")
    _, start = load_model(free["model_dir"])
    from learngene_jax import genes
    from learngene_jax.genes.io import load_gene as _load

    init = genes.expand(_load(aux["gene"]), 2)
    anchor = {"blocks": init["blocks"]}
    fisher = jax.tree.map(jnp.ones_like, anchor)
    save_ewc(tmp_path / "anchor", anchor, fisher)
    held = train(tiny_train_config(**base, **{"ewc.weight": 1e4, "ewc.path": str(tmp_path / "anchor")}),
                 tmp_path / "held")
    _, end = load_model(held["model_dir"])

    def drift(p):
        return sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(p["params"]["blocks"]),
                                                                 jax.tree.leaves(anchor["blocks"]), strict=True))

    assert drift(end) < 0.1 * drift(start)
    rows = [json.loads(line) for line in (tmp_path / "held" / "metrics.jsonl").read_text().splitlines()]
    assert any("ewc" in r for r in rows if r["split"] == "train")


def test_retokenization_keeps_params_and_changes_the_token_count(tmp_path):
    from learngene_jax.models import create_model
    from learngene_jax.models.vit import embed_tokens

    model = create_model("vit", width=32, num_heads=2, patch_size=4, image_size=16, depth=2, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    params = model.init(jax.random.key(1), x)["params"]
    coarse = model.clone(patch_stride=8, patch_dilation=2)  # span 2·3+1 = 7 → (16−7)//8+1 = 2 tokens a side
    assert jax.tree.map(jnp.shape, coarse.init(jax.random.key(1), x)["params"]) == jax.tree.map(jnp.shape, params)
    assert (model.token_grid, coarse.token_grid) == (4, 2)
    assert embed_tokens(model, params, x).shape == (2, 16, 32)
    assert embed_tokens(coarse, params, x).shape == (2, 4, 32)
    assert coarse.apply({"params": params}, x).shape == (2, 10)
    dense = model.clone(patch_stride=2, patch_dilation=1)  # 7 tokens a side, pos_embed resampled
    assert dense.token_grid == 7 and embed_tokens(dense, params, x).shape == (2, 49, 32)
    cfg = tiny_train_config(**{"epochs": 2, "retokenize": ((0, 8, 2), (1, 4, 1)), "max_steps": 30})
    out = train(cfg, tmp_path / "retok")
    assert out["steps"] == 30 and np.isfinite(out["loss"])
    evals = [r for r in map(json.loads, (tmp_path / "retok" / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "eval"]
    # epoch 1 evaluates the coarse phase; epoch 2 trains on the model's own stride 4, so its evaluation is the
    # exported model's and is the final result, not evaluated a second time
    assert [r.get("phase") for r in evals] == [{"patch_dilation": 2, "patch_stride": 8}, None]
    assert out["top1"] == evals[-1]["top1"] and out["loss"] == evals[-1]["loss"]
    _, variables = load_model(out["model_dir"])
    assert jax.tree.map(jnp.shape, variables["params"]) == jax.tree.map(jnp.shape, params)
    with pytest.raises(ConfigError, match="needs a patch-embedding model"):
        train(tiny_train_config(**{"retokenize": ((0, 2, 1),), "model": {"name": "cnn"}}), tmp_path / "cnn")


def test_resume_with_another_worker_count_keeps_the_stream(tmp_path, monkeypatch):
    """A checkpoint whose grain state was written by 1 worker process, resumed in-process (data.workers=0):
    that state does not fit the other pipeline, so the stream restarts at the checkpoint's step, and the params
    equal those of a run that never stopped."""
    train(tiny_train_config(max_steps=14), tmp_path / "straight")
    work = tmp_path / "two_parts"
    original = checkpointing.TrainCheckpoints.reached_preemption
    # a preemption notice right after step 7 (as a SIGTERM there would give)
    monkeypatch.setattr(checkpointing.TrainCheckpoints, "reached_preemption",
                        lambda self, step: step == 7 or original(self, step))
    with pytest.raises(Preempted, match="at step 7;"):
        train(tiny_train_config(**{"max_steps": 14, "data.workers": 1}), work)
    monkeypatch.undo()
    assert (work / "checkpoints" / "7" / "data" / "process_0-of-1.json").is_file()
    resumed = train(tiny_train_config(**{"max_steps": 14, "data.workers": 0}), work)
    assert resumed["steps"] == 14
    for a, b in zip(_final_params(tmp_path / "straight"), _final_params(work), strict=True):
        np.testing.assert_array_equal(a, b)


def test_async_save_keeps_the_values_of_its_step_when_the_buffers_are_donated(tmp_path):
    """save() returns before the files are written; the next step donates (reuses) the state's buffers, and the
    checkpoint still holds the saved step's values."""
    ckpts = checkpointing.TrainCheckpoints(tmp_path / "c")
    state = {"w": jnp.ones((1024, 1024), jnp.float32)}
    ckpts.save(1, state, {"step": 1})
    bump = jax.jit(lambda s: {"w": s["w"] + 1}, donate_argnums=0)
    for _ in range(3):
        state = bump(state)
    assert float(state["w"][0, 0]) == 4.0
    ckpts.close()
    target = {"w": jax.ShapeDtypeStruct((1024, 1024), jnp.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
    reopened = checkpointing.TrainCheckpoints(tmp_path / "c")
    restored, meta = reopened.restore(1, target)
    reopened.close()
    assert meta == {"step": 1} and float(restored["w"].min()) == float(restored["w"].max()) == 1.0
