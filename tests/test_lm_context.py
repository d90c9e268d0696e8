"""A context longer than a model's positions (GPT-2's learned n_positions table, a Llama's max_position_embeddings)
is a one-line `error:` (exit 2) before anything compiles, in every entry point: training from scratch, init from a
Hugging Face or model directory, LoRA, a teacher, predict --tokens and generate — not a NaN loss blamed on the lr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert.hf import to_hf
from learngene_jax.models.generation import generate
from learngene_jax.models.io import save_model
from learngene_jax.models.llama import GPT2, Llama

CONTEXT = 16
SHORT = 8  # positions of the models under test
CONFIG = '''
from learngene_jax.config_lib import base_config


def get_config(arg=None):
    c = base_config()
    c.data.update(dict(name="stdlib", context={context}, eval_windows=8, documents=("email/*",)))
    c.objective, c.batch_size, c.epochs, c.max_steps, c.log_every_steps = "lm", 8, 1, 3, 1
    c.model = dict(name="gpt2", width=16, depth=1, num_heads=2, max_positions={context})
    c.optim.update(dict(scale_lr=False, lr=1e-3))
    return c
'''


def short_model(arch):
    kw = dict(vocab_size=256, width=16, depth=1, num_heads=2, max_positions=SHORT)
    return Llama(**kw, num_kv_heads=1, mlp_dim=24) if arch == "llama" else GPT2(**kw)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    (root / "lm_config.py").write_text(CONFIG.format(context=CONTEXT))
    out = {"config": root / "lm_config.py"}
    for arch in ("gpt2", "llama"):
        model = short_model(arch)
        variables = model.init(jax.random.key(0), jnp.zeros((1, SHORT), jnp.int32))
        out[f"{arch}_hf"] = to_hf(model, variables, root / f"{arch}_hf")
        out[f"{arch}_model"] = save_model(root / f"{arch}_model", model, variables)
    return out


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "optim.lr" not in lines[0]


@pytest.mark.parametrize("case, flags, needles", [
    ("scratch", ["--config.model.max_positions=8"],
     ["data.context", "n_positions=8", "the student (scratch)", "config.model.max_positions"]),
    ("init_hf_gpt2", ["--config.init={gpt2_hf}"], ["n_positions=8", "--config.data.context=8"]),
    ("init_hf_llama", ["--config.init={llama_hf}"], ["max_position_embeddings=8", "--config.data.context=8"]),
    ("init_model_dir", ["--config.init={gpt2_model}"], ["n_positions=8", "the student (init:"]),
    ("lora", ["--config.init={gpt2_hf}", "--config.lora.rank=2"], ["n_positions=8", "the student (lora:"]),
    ("teacher", ["--config.distill.type=soft", "--config.distill.teacher_init={gpt2_hf}"],
     ["n_positions=8", "the teacher ("]),
])
def test_training_refuses_a_context_longer_than_the_positions(dirs, tmp_path, case, flags, needles):
    flags = [f.format(**dirs) for f in flags]
    proc = run_module("learngene_jax.main", f"--config={dirs['config']}", f"--workdir={tmp_path / 'w'}", *flags,
                      check=False, timeout=300)
    _one_line_error(proc, "16 tokens per sequence exceed", *needles)
    assert not (tmp_path / "w" / "checkpoints").exists() or not any((tmp_path / "w" / "checkpoints").iterdir())


def test_predict_tokens_refuses_rows_longer_than_the_positions(dirs, tmp_path):
    np.save(tmp_path / "tokens.npy", np.zeros((1, CONTEXT), np.int32))
    proc = run_module("learngene_jax.predict", "--model-dir", str(dirs["llama_hf"]), "--tokens",
                      str(tmp_path / "tokens.npy"), "--out", str(tmp_path / "x.npy"), check=False)
    _one_line_error(proc, "16 tokens per sequence exceed", "max_position_embeddings=8", "at most 8 tokens")


def test_generate_refuses_more_tokens_than_the_positions():
    model = short_model("gpt2")
    with pytest.raises(ValueError, match=r"exceed GPT-2's learned position table \(n_positions=8\)"):
        generate(model, {}, jnp.zeros((1, 5), jnp.int32), 4)
