"""The package's shape: the trainer learns about methods only through registries (so a method package can be
deleted), the `learngene` command and its verbs, the packaging, and profiles on request."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO

from learngene_jax import genes, methods, registry
from learngene_jax.models import model_names

METHOD_WORDS = re.compile(r"\b(tleg|sws|heur|lgpool|asvit|ewc|retokeni[sz]\w*|weight_selection)\b", re.I)


@pytest.mark.parametrize("module", ["train.py", "students.py", "stages.py", "registry.py", "main.py"])
def test_the_generic_modules_name_no_method(module):
    code = "\n".join(line.split("#")[0] for line in (REPO / "learngene_jax" / module).read_text().splitlines()
                     if not line.lstrip().startswith(("#", '"', "'")))
    assert not METHOD_WORDS.findall(code), METHOD_WORDS.findall(code)


def test_method_packages_register_their_parts():
    assert {"heur", "auto", "lgpool", "asvit_search", "asvit_grow", "train", "demo", "baselines"} <= set(
        registry.TASKS.names())
    assert {"scratch", "gene", "inherit", "weight_selection"} <= set(registry.STUDENTS.names())
    assert registry.LOSS_TERMS.names() == ["ewc"] and registry.STEP_VARIANTS.names() == ["retokenize"]
    assert set(genes.METHODS) == {"tleg", "sws", "heur", "heur_lora", "tleg_lm", "sws_lm"}
    assert {"tleg_aux_s", "sws_aux_b", "tleg_llama", "sws_gpt2", "llama", "gpt2", "lgpool", "stitched_vit", "asvit",
            "vit_small_patch16_224", "deit_tiny_distilled_patch16_224"} <= set(model_names())


# Imports every module left in a copy of the package without one method package, then checks that the registries
# hold everything else and that the trainer still builds a student.
WITHOUT = """
import importlib, json, pkgutil, sys
import learngene_jax
from learngene_jax import genes, registry
from learngene_jax.models import model_names
failed = []
for info in pkgutil.walk_packages(learngene_jax.__path__, "learngene_jax."):
    try:
        importlib.import_module(info.name)
    except Exception as e:
        failed.append(f"{info.name}: {e!r}")
import jax
from learngene_jax.students import build_student
sys.path.insert(0, "tests")
from helpers import tiny_train_config
student = build_student(tiny_train_config(), 10)
variables = jax.eval_shape(student.init, jax.random.key(0), student.source)
print(json.dumps({"failed": failed, "tasks": registry.TASKS.names(), "students": registry.STUDENTS.names(),
                  "methods": sorted(genes.METHODS), "models": model_names()}))
"""


@pytest.mark.parametrize("package", methods.PACKAGES)
def test_deleting_a_method_package_leaves_everything_else_working(package, tmp_path):
    shutil.copytree(REPO / "learngene_jax", tmp_path / "learngene_jax", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(tmp_path / "learngene_jax" / "methods" / package)
    proc = subprocess.run([sys.executable, "-c", WITHOUT], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == []
    gone = {"tleg": ("methods", "tleg"), "sws": ("methods", "sws"), "heur": ("tasks", "auto"),
            "lgpool": ("tasks", "lgpool"), "asvit": ("tasks", "asvit_search"),
            "weight_selection": ("students", "weight_selection")}
    table, entry = gone[package]
    assert entry not in out[table]
    for other, (other_table, other_entry) in gone.items():
        if other != package:
            assert other_entry in out[other_table], (other, out[other_table])


def _learngene(*args, cwd=REPO, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    return subprocess.run([sys.executable, "-c", "from learngene_jax.cli import learngene; learngene()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def digits_gene(tmp_path_factory):
    from helpers import tiny_gene

    from learngene_jax.genes.io import save_gene

    _, _, gene = tiny_gene("tleg", image_size=16, patch_size=4)
    return str(save_gene(tmp_path_factory.mktemp("gene") / "gene", gene))


@pytest.mark.slow
def test_learngene_verbs_expand_adapt_and_sweep_a_gene(digits_gene, tmp_path):
    import jax
    import numpy as np

    from learngene_jax.genes.io import load_gene
    from learngene_jax.models.io import load_model

    expand = _learngene("expand", "--gene", digits_gene, "--depth", "3", "--out", str(tmp_path / "des"))
    assert expand.returncode == 0, expand.stderr
    model, variables = load_model(tmp_path / "des")
    gene = load_gene(digits_gene)
    want = genes.expand(gene, 3, rng=jax.random.key(0))
    assert model == genes.descendant_model(gene, 3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], want)
    quick = ["--config", "configs/digits.py", "--config.max_steps=2", "--config.eval_batch_size=450"]
    adapt = _learngene("adapt", "--gene", digits_gene, "--depth", "2", "--workdir", str(tmp_path / "adapt"), *quick)
    assert adapt.returncode == 0, adapt.stderr
    final = json.loads((tmp_path / "adapt" / "final.json").read_text())
    assert final["origin"] == f"gene:{digits_gene}" and final["steps"] == 2
    recorded = (tmp_path / "adapt" / "commands.txt").read_text().strip()
    assert recorded.startswith("learngene adapt --gene ") and "--depth 2" in recorded  # the line reruns the job
    sweep = _learngene("sweep", "--gene", digits_gene, "--depths", "1,2", "--workdir", str(tmp_path / "sweep"), *quick)
    assert sweep.returncode == 0, sweep.stderr
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [r["depth"] for r in summary["rows"]] == [1, 2] and [r["steps"] for r in summary["rows"]] == [2, 2]
    assert "--depths 1,2" in (tmp_path / "sweep" / "commands.txt").read_text()
    assert [r["params"] for r in summary["rows"]] == [
        json.loads((tmp_path / "sweep" / f"L{d}" / "final.json").read_text())["params"] for d in (1, 2)]
    assert (tmp_path / "sweep" / "summary.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (("nope",), "error: unknown command 'nope'"),
    (("adapt", "--depth", "2", "--config", "configs/digits.py", "--workdir", "/tmp/x"),
     "error: the following arguments are required: --gene"),
    (("sweep", "--gene", "g", "--depths", "2,x", "--config", "configs/digits.py", "--workdir", "/tmp/x"),
     "error: --depths: expected comma-separated integers"),
    (("train", "--config", "configs/digits.py:nope=1", "--workdir", "/tmp/x"), "error: config argument 'nope=1'"),
    (("expand", "--gene", "/nonexistent", "--depth", "2", "--out", "/tmp/x"), "error: "),
    (("train", "--config", "configs/learngene_imagenet.py:method=sws,size=ti,stage=descendant", "--workdir", "/tmp/x"),
     "error: SWS has official recipes for sizes ['b', 's'] only"),
    (("train", "--config", "configs/auto_vgg.py:smoke=True", "--workdir", "/tmp/x", "--config.auto.bogus=1"),
     "error: unknown config key 'auto.bogus'"),
])
def test_learngene_bad_input_is_one_line_with_exit_2(args, message):
    proc = _learngene(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in proc.stderr
    assert message in proc.stderr


def test_learngene_lists_its_commands():
    proc = _learngene("--help")
    assert proc.returncode == 0
    for verb in ("train", "adapt", "expand", "convert", "predict", "analyze", "results", "bench", "sweep"):
        assert re.search(rf"^\s+{verb}\s", proc.stdout, re.M), verb


def test_pyproject_declares_dependencies_extras_and_the_console_command():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["learngene"] == "learngene_jax.cli:learngene"
    assert {"torch", "dev", "gpu", "tpu"} <= set(project["optional-dependencies"])
    declared = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in project["dependencies"]}
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (REPO / "requirements.txt").read_text()
              .splitlines() if "==" in line and not line.startswith("#")}
    assert pinned - {"jaxlib"} <= declared, pinned - declared  # what the pinned install needs, a wheel needs too


def test_profile_steps_write_a_trace_after_the_compiling_step(tmp_path):
    from helpers import tiny_train_config

    from learngene_jax.errors import ConfigError
    from learngene_jax.train import train

    train(tiny_train_config(max_steps=4, profile_steps=2), tmp_path / "run")
    traces = list((tmp_path / "run" / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    with pytest.raises(ConfigError, match="profile_steps must be >= 0"):
        train(tiny_train_config(max_steps=2, profile_steps=-1), tmp_path / "bad")
