"""Memory of language-model training (issue 27.4): remat policies, gradient accumulation, the chunked loss, bf16
storage of frozen weights, gradients of the trainable params alone, the attention kernel choice, and the compiled
step's memory analysis (`learngene bench memory`) against the HBM the at-scale recipe names."""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from learngene_jax.config_lib import base_config, load_config, with_changes
from learngene_jax.errors import ConfigError
from learngene_jax.models import lora
from learngene_jax.models.llama import GPT2, Llama, causal_attention, select_attention
from learngene_jax.objectives.teacher import Teacher
from learngene_jax.optim import build_optimizer, lr_schedule, split_trainable
from learngene_jax.students import Student
from learngene_jax.train import make_train_step, state_initializer

VOCAB = 64


def _llama(**kw):
    fields = dict(vocab_size=VOCAB, width=32, depth=3, num_heads=4, num_kv_heads=2, mlp_dim=48, max_positions=64)
    return Llama(**{**fields, **kw})


def _tokens(batch, length, seed=0, vocab=VOCAB):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (batch, length)), jnp.int32)


def _lm_config(**changes):
    return with_changes(base_config(), **{"objective": "lm", "optim.name": "sgd", "optim.momentum": 0.0,
                                          "optim.lr": 0.5, "optim.scale_lr": False, "optim.schedule": "constant",
                                          "optim.weight_decay": 0.0, **changes})


def _grads(model, params, tokens):
    """(the compiled gradient of the next-token loss, the gradients)."""
    def loss(p):
        logits = model.apply({"params": p}, tokens[:, :-1], train=True)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]))
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled, compiled(params)


# --- remat --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [Llama, GPT2])
def test_remat_policies_keep_the_gradients_and_full_remat_needs_less_temporary_memory(cls):
    fields = dict(vocab_size=VOCAB, width=64, depth=4, num_heads=4, max_positions=128)
    model = cls(**fields, **({"num_kv_heads": 2, "mlp_dim": 128} if cls is Llama else {}))
    tokens = _tokens(8, 129)
    params = model.init(jax.random.key(0), tokens[:, :8])["params"]
    compiled, reference = _grads(model, params, tokens)
    temps = {"none": compiled.memory_analysis().temp_size_in_bytes}
    for policy in ("full", "dots_saveable", "dots_with_no_batch_dims_saveable", True):
        compiled, grads = _grads(model.clone(remat=policy), params, tokens)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, reference)
        temps[str(policy)] = compiled.memory_analysis().temp_size_in_bytes
    assert temps["full"] < 0.6 * temps["none"], temps  # only each layer's input is kept across layers
    assert temps["True"] == temps["full"]


def test_an_unknown_remat_policy_is_a_config_error():
    from learngene_jax.students import model_kwargs

    config = with_changes(base_config(), model={"name": "llama", "remat": "everything"})
    with pytest.raises(ConfigError, match="remat must be one of none, full, dots_saveable"):
        model_kwargs(config)


# --- gradient accumulation ----------------------------------------------------------------------------------------

def _one_step(config, model, params, batch, teacher=None, trainable=None):
    schedule = lr_schedule(config.optim, config.batch_size, 1, 1)
    tx = build_optimizer(config.optim, schedule)
    student = Student(model, lambda rng, source: {"params": params}, None, None, "test", trainable)
    state = state_initializer(student, tx, jnp.float32)(jax.random.key(0), None)
    frozen = {} if teacher is None else {"teacher": teacher.variables}
    step = jax.jit(make_train_step(config, model, tx, schedule, teacher, VOCAB, 1, jax.random.key(1),
                                   trainable=trainable))
    return step(state, batch, frozen)


def _teacher():
    model = _llama(width=48, depth=2, vocab_size=VOCAB + 8)  # a table padded past the tokenizer's ids
    return Teacher(model, model.init(jax.random.key(9), _tokens(1, 8)), vocab=VOCAB)


@pytest.mark.parametrize("kd", [False, True])
def test_accumulated_microbatches_make_the_step_of_the_whole_batch(kd, token_mask=True):
    model = _llama()
    params = model.init(jax.random.key(0), _tokens(1, 8))["params"]
    batch = {"tokens": _tokens(8, 17, seed=1), "mask": jnp.ones(8)}
    if token_mask:  # microbatches with different numbers of real targets
        batch["token_mask"] = jnp.asarray(np.random.default_rng(2).random((8, 16)) < 0.3 + 0.08 * np.arange(8)[:, None],
                                          jnp.float32)
    teacher = _teacher() if kd else None
    distill = {"distill.type": "soft", "distill.alpha": 0.7, "distill.temperature": 2.0} if kd else {}
    whole_state, whole = _one_step(_lm_config(batch_size=8, **distill), model, params, batch, teacher)
    for k in (4,):
        state, metrics = _one_step(_lm_config(batch_size=8, **{"optim.accum_steps": k}, **distill), model, params,
                                   batch, teacher)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-7), state["params"],
                     whole_state["params"])
        for name in ("loss", "grad_norm", "ce") + (("kd",) if kd else ()):
            np.testing.assert_allclose(metrics[name], whole[name], rtol=1e-5)


def test_accumulation_must_split_the_batch_evenly_over_the_devices():
    from learngene_jax.train import check_accumulation

    assert check_accumulation(_lm_config(batch_size=32, **{"optim.accum_steps": 4}), 8) == 4
    with pytest.raises(ConfigError, match="make batch_size a multiple of 48"):
        check_accumulation(_lm_config(batch_size=32, **{"optim.accum_steps": 6}), 8)
    with pytest.raises(ConfigError, match="accum_steps must be a whole number >= 1"):
        check_accumulation(_lm_config(**{"optim.accum_steps": 0}), 1)


# --- chunked loss ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kd", [False, True])
def test_the_chunked_loss_equals_the_plain_loss_and_gradients(kd):
    from learngene_jax.objectives.classification import StepInputs, make_objective

    model = _llama(vocab_size=VOCAB + 4)
    params = model.init(jax.random.key(0), _tokens(1, 8))["params"]
    tokens = _tokens(4, 23, seed=3)
    mask = jnp.asarray(np.random.default_rng(4).random((4, 22)) < 0.8, jnp.float32)
    teacher = _teacher() if kd else None
    frozen = {} if teacher is None else {"teacher": teacher.variables}
    inputs = StepInputs(tokens[:, :-1], None, tokens[:, 1:], jax.random.key(0), {"tokens": tokens,
                                                                                 "token_mask": mask})
    distill = {"distill.type": "soft", "distill.alpha": 0.4, "distill.temperature": 1.5} if kd else {}
    results = {}
    for chunk in (0, 5, 22):  # 5 does not divide the 22 tokens: the last chunk is padded
        objective = make_objective(_lm_config(loss_chunk=chunk, **distill), model, teacher)

        def loss(p, objective=objective):
            value, _, extra = objective(p, {}, frozen, inputs)
            return value, extra
        (value, extra), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        results[chunk] = (value, extra, grads)
    for chunk in (5, 22):
        np.testing.assert_allclose(results[chunk][0], results[0][0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), results[chunk][1], results[0][1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), results[chunk][2],
                     results[0][2])


def test_the_chunked_loss_never_holds_the_logits_of_the_whole_batch():
    from learngene_jax.objectives.classification import StepInputs, make_objective

    vocab, batch, length = 4096, 4, 256
    model = Llama(vocab_size=vocab, width=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=32, max_positions=256)
    params = model.init(jax.random.key(0), _tokens(1, 8, vocab=vocab))["params"]
    tokens = _tokens(batch, length + 1, vocab=vocab)
    inputs = StepInputs(tokens[:, :-1], None, tokens[:, 1:], jax.random.key(0), {"tokens": tokens})
    logits_bytes = batch * length * vocab * 4  # one (batch, tokens, vocab) float32 array
    temps, largest = {}, {}
    for chunk in (0, 8):
        objective = make_objective(_lm_config(loss_chunk=chunk), model, None)
        grad = jax.jit(jax.grad(lambda p, objective=objective: objective(p, {}, {}, inputs)[0]))
        compiled = grad.lower(params).compile()
        temps[chunk] = compiled.memory_analysis().temp_size_in_bytes
        shapes = re.findall(r"f32\[([0-9,]+)\]", compiled.as_text())  # every float32 array of the program
        largest[chunk] = max(math.prod(int(n) for n in shape.split(",")) for shape in shapes)
    # the largest left is attention's (batch, heads, tokens, tokens), an eighth of the logits here
    assert largest[0] == batch * length * vocab and largest[8] < batch * length * vocab / 4, largest
    assert temps[0] - temps[8] > 2 * logits_bytes, temps  # the logits and their gradient are gone


# --- frozen weights: bf16 storage, no gradients ---------------------------------------------------------------------

def _lora_student(base, variables):
    model = lora.with_lora(base, 2, 4.0, ("q", "v"))

    def init(rng, loaded):
        adapters = model.init(rng, _tokens(1, 8))["params"]["lora"]
        adapters = jax.tree.map(lambda a: a + 0.05, adapters)  # B ≠ 0: the adapters act
        return {"params": {**loaded["params"], "lora": adapters}}
    return Student(model, init, variables, None, "lora:test", trainable=lambda path: path[0] == "lora")


def test_frozen_weights_are_stored_in_bf16_the_adapters_stay_float32_and_export_the_original_base():
    from learngene_jax.train import with_source_frozen

    base = _llama()
    variables = base.init(jax.random.key(0), _tokens(1, 8))
    student = _lora_student(base, variables)
    tx = build_optimizer(_lm_config().optim, optax.constant_schedule(0.1))
    state = state_initializer(student, tx, jnp.bfloat16)(jax.random.key(1), variables)
    trained, fixed = split_trainable(state["params"], student.trainable)
    assert {x.dtype for x in jax.tree.leaves(trained)} == {jnp.dtype(jnp.float32)} and set(trained) == {"lora"}
    assert {x.dtype for x in jax.tree.leaves(fixed)} == {jnp.dtype(jnp.bfloat16)}
    reference = state_initializer(student, tx, jnp.float32)(jax.random.key(1), variables)
    tokens = _tokens(2, 16, seed=5)
    logits = student.model.apply({"params": state["params"]}, tokens)
    exact = student.model.apply({"params": reference["params"]}, tokens)
    np.testing.assert_allclose(logits, exact, atol=2e-2 * float(jnp.abs(exact).max()))  # bf16: 8 mantissa bits
    exported = with_source_frozen(jax.device_get({"params": state["params"]}), student)["params"]
    jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in exported.items() if k != "lora"},
                 jax.device_get(variables["params"]))


def test_a_lora_step_differentiates_the_adapters_alone_with_fewer_flops():
    from learngene_jax.objectives.classification import StepInputs, make_objective
    from learngene_jax.train import accumulated_gradients

    base = _llama(vocab_size=512, tie_embeddings=False)
    variables = base.init(jax.random.key(0), _tokens(1, 8))
    student = _lora_student(base, variables)
    params = student.init(jax.random.key(1), variables)["params"]
    tokens = _tokens(4, 65, seed=6)
    inputs = StepInputs(tokens[:, :-1], None, tokens[:, 1:], jax.random.key(0), {"tokens": tokens})
    objective = make_objective(_lm_config(), student.model, None)
    trained, fixed = split_trainable(params, student.trainable)

    def loss_fn(trained, collections, inputs):
        loss, updates, extra = objective({**fixed, **trained}, collections, {}, inputs)
        return loss, (updates, extra)

    _, _, _, grads = accumulated_gradients(loss_fn, trained, {}, inputs, 1)
    assert set(grads) == {"lora"} and set(grads["lora"]) == {"q_lora_a", "q_lora_b", "v_lora_a", "v_lora_b"}

    def whole_tree(params):  # what the step differentiated before: every param, the frozen ones included
        return jax.grad(lambda p: objective(p, {}, {}, inputs)[0])(params)

    def adapters(trained):
        return jax.grad(lambda t: loss_fn(t, {}, inputs)[0])(trained)

    flops = {name: jax.jit(fn).lower(arg).compile().cost_analysis()["flops"]
             for name, fn, arg in (("all", whole_tree, params), ("adapters", adapters, trained))}
    assert flops["adapters"] < 0.9 * flops["all"], flops  # no head, embedding or norm gradients
    # the step's grad_norm is the adapters'
    config = _lm_config(batch_size=4)
    _, metrics = _one_step(config, student.model, params, {"tokens": tokens, "mask": jnp.ones(4)},
                           trainable=student.trainable)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)


# --- attention kernel ---------------------------------------------------------------------------------------------

def test_attention_kernel_choice():
    cuda = ("gpu", "cuda 12.8", "9.0")
    assert select_attention(*cuda, jnp.bfloat16, 64) == "cudnn"
    assert select_attention(*cuda, jnp.float16, 128) == "cudnn"
    assert select_attention(*cuda, jnp.float32, 64) == "xla"  # the fused kernel takes fp16/bf16 only
    assert select_attention(*cuda, jnp.bfloat16, 60) == "xla"  # head dims: multiples of 8 up to 128
    assert select_attention(*cuda, jnp.bfloat16, 256) == "xla"
    assert select_attention("gpu", "cuda 12.8", "7.5", jnp.bfloat16, 64) == "xla"  # before Ampere
    assert select_attention("gpu", "rocm 6", None, jnp.bfloat16, 64) == "xla"
    assert select_attention("cpu", "", None, jnp.bfloat16, 64) == "xla"
    assert select_attention("tpu", "", None, jnp.bfloat16, 128) == "xla"


def test_on_cpu_the_default_attention_is_xlas_bit_for_bit():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((2, 16, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((2, 16, 2, 8)), jnp.float32) for _ in range(2))
    padding = jnp.asarray(np.arange(16) >= np.array([[0], [5]]), jnp.int32)
    for mask in (None, padding):
        got = causal_attention(q, k, v, mask, None)
        want = jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask[:, None, None, :].astype(bool),
                                            is_causal=True, implementation="xla")
        np.testing.assert_array_equal(got, want)


# --- the compiled step's memory -----------------------------------------------------------------------------------

def test_bench_memory_prints_the_compiled_steps_memory_per_device(capsys):
    from learngene_jax.bench.__main__ import main

    main(["memory", "--config", "configs/lm_hf_teacher.py:method=tleg,stage=aux,smoke=True", "--devices", "8",
          "--vocab", "300"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["devices"] == 8 and row["mesh"] == {"data": 1, "fsdp": 8} and row["vocab"] == 300
    sizes = row["per_device_bytes"]
    assert set(sizes) == {"arguments", "temporaries", "outputs", "aliased", "generated_code", "total"}
    assert sizes["temporaries"] > 0 and sizes["arguments"] > 0
    assert sizes["total"] == sizes["arguments"] + sizes["temporaries"] + sizes["outputs"] - sizes["aliased"]
    assert row["precision"] == "bfloat16" and row["teacher"].startswith("Llama")


def test_the_at_scale_recipes_step_fits_the_hbm_its_docstring_names():
    """configs/lm_hf_teacher.py at full size (a 1.1B teacher, 256 windows of 1024 tokens, 8 chips): its compiled
    stage-1 step stays under a v5e chip's 16 GiB, as its docstring states (about 15 s to compile here)."""
    from learngene_jax.bench.memory import accelerator_config, step_memory

    config = accelerator_config(load_config("configs/lm_hf_teacher.py:method=tleg,stage=aux"))
    row = step_memory(config, config.memory_estimate.vocab)
    assert row["devices"] == 8 and row["sequences_per_device_per_microbatch"] == 8
    assert row["per_device_bytes"]["total"] < 16 * 2**30, row["per_device_gib"]


def test_bench_memory_refuses_image_recipes(tmp_path):
    from conftest import run_module

    proc = run_module("learngene_jax.bench", "memory", "--config", "configs/digits.py", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: bench memory sizes language-model")
    assert "Traceback" not in proc.stderr
