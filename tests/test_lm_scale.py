"""The at-scale LM recipe (configs/lm_hf_teacher.py) end to end at smoke size: a Hugging Face teacher directory read
directly, token files from `learngene tokenize` with a locally trained BPE, FSDP over 8 CPU devices against plain
data parallelism, a gene expanded into a descendant that exports to the Hugging Face layout; LoRA on a Hugging Face
directory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learngene_jax.config_lib import load_config, with_changes
from learngene_jax.convert.hf import from_hf, to_hf
from learngene_jax.models.llama import Llama

VOCAB = 300
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (2, 12)), jnp.int32)


@pytest.fixture(scope="module")
def teacher_and_tokens(tmp_path_factory):
    from learngene_jax import tokenize_corpus

    root = tmp_path_factory.mktemp("lm_scale")
    teacher = Llama(vocab_size=VOCAB, width=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=48, max_positions=64)
    hf_dir = to_hf(teacher, teacher.init(jax.random.key(3), TOKENS), root / "hf_teacher")
    import os

    os.environ["LEARNGENE_CACHE"] = str(root / "cache")
    try:
        tokenize_corpus.main(["--corpus", "stdlib", "--documents", "email/*", "--tokenizer", f"bpe:{VOCAB}",
                       "--out", str(root / "tokens")])
    finally:
        del os.environ["LEARNGENE_CACHE"]
    return root, hf_dir, root / "tokens"


def _config(arg, tokens, **changes):
    c = load_config(f"configs/lm_hf_teacher.py:{arg},smoke=True")
    return with_changes(c, **{"data.path": str(tokens), **changes})


def test_fsdp_distillation_from_a_hugging_face_teacher_matches_data_parallel(teacher_and_tokens, tmp_path):
    from learngene_jax.genes.io import load_gene
    from learngene_jax.models.io import load_model
    from learngene_jax.train import train

    assert len(jax.devices()) == 8  # conftest: 8 CPU devices
    root, hf_dir, tokens = teacher_and_tokens
    fsdp = train(_config("method=tleg,stage=aux", tokens, **{"distill.teacher_init": str(hf_dir)}), tmp_path / "f")
    dp = train(_config("method=tleg,stage=aux", tokens, **{"distill.teacher_init": str(hf_dir), "mesh.fsdp": 1,
                                                           "mesh.data": -1, "sharding.strategy": "dp"}),
               tmp_path / "d")
    assert fsdp["loss"] == pytest.approx(dp["loss"], rel=1e-5)
    model_f, vf = load_model(tmp_path / "f" / "model")
    _, vd = load_model(tmp_path / "d" / "model")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), vf, vd)
    assert model_f.vocab_size == VOCAB and load_gene(fsdp["gene"]).meta.method == "tleg_lm"
    des = train(_config("stage=descendant", tokens, gene=fsdp["gene"], depth=2), tmp_path / "des")
    model, variables = load_model(tmp_path / "des" / "model")
    assert type(model) is Llama and model.depth == 2 and np.isfinite(des["loss"])
    plain, pv = from_hf(to_hf(model, variables, tmp_path / "des_hf"))
    np.testing.assert_allclose(plain.apply(pv, TOKENS), model.apply(variables, TOKENS), atol=1e-5)


def test_lora_and_teachers_read_hugging_face_directories_directly(teacher_and_tokens, tmp_path):
    from learngene_jax.models import lora
    from learngene_jax.students import build_student

    _, hf_dir, tokens = teacher_and_tokens
    c = _config("stage=scratch", tokens, init=str(hf_dir), **{"lora.rank": 2})
    student = build_student(c, VOCAB)
    assert isinstance(student.model, lora.LoRALlama)
    params = student.init(jax.random.key(0), student.source)["params"]
    plain, pv = from_hf(hf_dir)
    np.testing.assert_allclose(student.model.apply({"params": params}, TOKENS), plain.apply(pv, TOKENS), atol=1e-6)
