"""Decoder LMs (models/llama.py) against Hugging Face transformers on random tiny models: logits, parameter counts,
greedy generation, the from-hf / to-hf conversions (sharded and bfloat16 files included) and their bad inputs."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert import hf
from learngene_jax.convert.table import torch_to_flax
from learngene_jax.errors import ConversionError
from learngene_jax.models.generation import generate
from learngene_jax.models.llama import GPT2, Llama, abstract_lm_params, check_tokens
from learngene_jax.models.vit import count_params

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 97
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 13))
LLAMA = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500.0)
CASES = {
    "llama_gqa": ("llama", dict(LLAMA, num_key_value_heads=2, tie_word_embeddings=False)),
    "llama_tied": ("llama", dict(LLAMA, num_key_value_heads=4, tie_word_embeddings=True)),
    "gpt2": ("gpt2", dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
                          eos_token_id=0)),
}


@pytest.fixture(scope="module")
def transformers():
    from learngene_jax.torch_ref import import_transformers

    return import_transformers()


def hf_model(transformers, case, seed=0):
    import torch

    kind, kwargs = CASES[case]
    torch.manual_seed(seed)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs)).eval()
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).eval()


def hf_logits(model, tokens):
    import torch

    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_from_hf_logits_and_param_count_equal_transformers(transformers, case, tmp_path):
    ref = hf_model(transformers, case)
    ref.save_pretrained(tmp_path / "hf")
    model, variables = hf.from_hf(tmp_path / "hf")
    got = np.asarray(model.apply(variables, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(got, hf_logits(ref, TOKENS), rtol=0, atol=1e-5)
    assert count_params(variables["params"]) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_to_hf_loads_in_transformers_without_warnings_and_gives_the_same_logits(transformers, case, tmp_path,
                                                                                 caplog):
    kind, kwargs = CASES[case]
    model, _ = hf.from_hf(_saved(transformers, case, tmp_path / "ref"))  # the architecture
    variables = model.init(jax.random.key(3), jnp.asarray(TOKENS))
    hf.to_hf(model, variables, tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        loaded, info = type(hf_model(transformers, case)).from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    np.testing.assert_allclose(hf_logits(loaded.eval(), TOKENS), np.asarray(model.apply(variables, TOKENS)),
                               rtol=0, atol=1e-5)


def _saved(transformers, case, path, **save):
    hf_model(transformers, case).save_pretrained(path, **save)
    return path


def test_sharded_bfloat16_checkpoint_reads_like_transformers(transformers, tmp_path):
    import torch

    ref = hf_model(transformers, "llama_gqa").to(torch.bfloat16)
    ref.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model, variables = hf.from_hf(tmp_path / "hf")
    want = {k: v.float().numpy() for k, v in ref.state_dict().items()}
    q1 = want["model.layers.1.self_attn.q_proj.weight"].T
    np.testing.assert_array_equal(variables["params"]["layers"]["q"][1], q1)
    np.testing.assert_array_equal(variables["params"]["embed"], want["model.embed_tokens.weight"])


def test_greedy_generation_equals_transformers(transformers):
    ref = hf_model(transformers, "llama_gqa")
    import torch

    with torch.no_grad():
        want = ref.generate(torch.tensor(TOKENS[:, :5]), max_new_tokens=6, do_sample=False, min_new_tokens=6,
                            pad_token_id=0).numpy()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = hf.model_from_config(ref.config.to_dict())
    params = torch_to_flax(state, hf.LLAMA_RULES, abstract_lm_params(model))
    got = generate(model, {"params": params}, jnp.asarray(TOKENS[:, :5]), 6)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_causal_and_padding_masks():
    model = Llama(vocab_size=VOCAB, width=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=48, max_positions=32)
    variables = model.init(jax.random.key(0), jnp.asarray(TOKENS))
    full = model.apply(variables, jnp.asarray(TOKENS))
    changed = TOKENS.copy()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    # a later token never changes earlier logits
    np.testing.assert_allclose(model.apply(variables, jnp.asarray(changed))[:, :-1], full[:, :-1], atol=1e-6)
    # right padding: the real tokens' logits do not depend on what the padded positions hold
    padding = np.ones_like(TOKENS)
    padding[:, -3:] = 0
    a = model.apply(variables, jnp.asarray(TOKENS), jnp.asarray(padding))
    b = model.apply(variables, jnp.asarray(changed), jnp.asarray(padding))
    np.testing.assert_allclose(a[:, :-3], b[:, :-3], atol=1e-6)


def test_tokens_outside_the_vocabulary_are_an_error_not_a_clamp():
    with pytest.raises(ValueError, match="token ids must lie in 0..96"):
        check_tokens(np.array([[1, 97]]), VOCAB)
    with pytest.raises(ValueError, match="int32 token ids of shape"):
        check_tokens(np.zeros((2, 3), np.float32), VOCAB)
    with pytest.raises(ValueError, match="exceed"):
        generate(GPT2(vocab_size=VOCAB, width=32, depth=1, num_heads=2, max_positions=8), {}, jnp.zeros((1, 6),
                 jnp.int32), 5)


@pytest.mark.parametrize("edit, message", [
    (lambda d: _json_edit(d / "config.json", model_type="bert"), "model_type 'bert'"),
    (lambda d: _json_edit(d / "config.json", rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_type 'yarn'"),
    (lambda d: _json_edit(d / "config.json", rope_parameters={"rope_type": "longrope", "rope_theta": 5e5}),
     "rope_type 'longrope'"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 10), "damaged or incomplete"),
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
])
def test_bad_hf_directories_are_one_line_errors(transformers, tmp_path, edit, message):
    path = _saved(transformers, "llama_gqa", tmp_path / "hf")
    edit(path)
    with pytest.raises(ConversionError, match=message):
        hf.from_hf(path)


def test_a_missing_shard_is_named(transformers, tmp_path):
    path = _saved(transformers, "gpt2", tmp_path / "hf", max_shard_size="40KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    lost = sorted(set(index["weight_map"].values()))[-1]
    (path / lost).unlink()
    with pytest.raises(ConversionError, match=f"shard.*{lost}"):
        hf.from_hf(path)


def _json_edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_cli_from_hf_then_to_hf_round_trip(transformers, tmp_path):
    src = _saved(transformers, "llama_tied", tmp_path / "hf")
    run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(src), "--out", str(tmp_path / "m"))
    run_module("learngene_jax.convert", "to-hf", "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "back"))
    loaded = type(hf_model(transformers, "llama_tied")).from_pretrained(tmp_path / "back").eval()
    np.testing.assert_allclose(hf_logits(loaded, TOKENS), hf_logits(hf_model(transformers, "llama_tied"), TOKENS),
                               rtol=0, atol=1e-6)
    bad = run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(tmp_path / "nope"), "--out",
                     str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


# -- genes over depth for language models ------------------------------------------------------------------------
LM_SMALL = dict(vocab_size=VOCAB, width=32, num_heads=4, mlp_dim=48, max_positions=32)


def _aux(method, arch, seed=0, **kw):
    from conftest import randomize

    from learngene_jax import genes
    from learngene_jax.models import create_model

    extra = dict(depth=4) if method == "tleg" else dict(depth=5, stage_sizes=(2, 1, 2))
    fields = dict(LM_SMALL, **({"num_kv_heads": 2} if arch == "llama" else {}))
    model = create_model(f"{method}_{arch}", **fields, **extra, **kw)
    params = randomize(model.init(jax.random.key(seed), jnp.asarray(TOKENS))["params"], seed)
    return model, params, genes.extract_gene(params, genes.get_method(f"{method}_lm").meta_from_aux(model))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tleg_lm_descendant_layers_follow_the_rule_and_reproduce_the_aux_at_its_depth(arch):
    from learngene_jax import genes

    aux, params, gene = _aux("tleg", arch)
    for depth in (2, 4, 7):
        expanded = genes.expand(gene, depth)
        theta = params["tleg"]
        for name, stack in expanded["layers"].items():
            for i in range(depth):
                np.testing.assert_allclose(stack[i], theta["theta_b"][name] + np.float32(i / depth)
                                           * theta["theta_a"][name], rtol=1e-6, atol=1e-6)
    descendant = genes.descendant_model(gene, 4)
    assert type(descendant) in (Llama, GPT2)
    np.testing.assert_allclose(descendant.apply({"params": genes.expand(gene, 4)}, TOKENS),
                               aux.apply({"params": params}, TOKENS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sws_lm_descendants_copy_stages_and_reproduce_the_aux_with_its_layout(arch):
    from learngene_jax import genes

    aux, params, gene = _aux("sws", arch)
    expanded = genes.expand(gene, layers_source="0,0,1,2,2")  # the aux layout
    np.testing.assert_allclose(genes.descendant_model(gene, 5).apply({"params": expanded}, TOKENS),
                               aux.apply({"params": params}, TOKENS), rtol=0, atol=1e-5)
    three = genes.expand(gene, 3)
    from learngene_jax.methods.sws.gene import default_layers_source

    for i, stage in enumerate(default_layers_source((2, 1, 2), 3)):
        for name, stack in three["layers"].items():
            np.testing.assert_array_equal(stack[i], params["sws"]["stages"][name][stage])


def test_gradients_reach_theta_a_and_theta_b():
    aux, params, _ = _aux("tleg", "llama")

    def loss(p):
        logits = aux.apply({"params": p}, TOKENS)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    grads = jax.grad(loss)(params)["tleg"]
    for part in ("theta_a", "theta_b"):
        for name, g in grads[part].items():
            assert float(jnp.abs(g).sum()) > 0, (part, name)


def test_lm_genes_round_trip_through_orbax_and_the_single_file(tmp_path):
    from learngene_jax.genes.files import load_gene_safetensors, save_gene_safetensors
    from learngene_jax.genes.io import load_gene, save_gene

    for method, arch in (("tleg", "llama"), ("sws", "gpt2")):
        _, _, gene = _aux(method, arch)
        save_gene_safetensors(gene, tmp_path / f"{method}.safetensors")
        for back in (load_gene(save_gene(tmp_path / f"{method}_dir", gene)),
                     load_gene_safetensors(tmp_path / f"{method}.safetensors")):
            assert back.meta == gene.meta
            jax.tree_util.tree_map(np.testing.assert_array_equal, back.params, gene.params)


def test_tleg_lm_descendant_exports_to_transformers(transformers, tmp_path):
    from learngene_jax import genes

    _, _, gene = _aux("tleg", "llama")
    model, params = genes.descendant_model(gene, 3), genes.expand(gene, 3)
    hf.to_hf(model, {"params": params}, tmp_path / "des")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "des").eval()
    np.testing.assert_allclose(hf_logits(loaded, TOKENS), np.asarray(model.apply({"params": params}, TOKENS)),
                               rtol=0, atol=1e-5)


def test_predict_takes_token_ids_for_language_models(transformers, tmp_path):
    src = _saved(transformers, "gpt2", tmp_path / "hf")
    run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(src), "--out", str(tmp_path / "m"))
    np.save(tmp_path / "tokens.npy", TOKENS.astype(np.int32))
    run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "m"), "--tokens", str(tmp_path / "tokens.npy"),
               "--out", str(tmp_path / "logits.npy"), "--batch-size", "1")
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), hf_logits(hf_model(transformers, "gpt2"), TOKENS),
                               rtol=0, atol=1e-5)
    np.save(tmp_path / "bad.npy", np.full((1, 4), VOCAB, np.int32))
    for data, message in ((["--tokens", str(tmp_path / "bad.npy")], "token ids must lie in 0..96"),
                          (["--images", str(tmp_path / "tokens.npy")], "GPT2 takes --tokens")):
        proc = run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "m"), *data, "--out",
                          str(tmp_path / "x.npy"), check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr


# -- LoRA --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_unmerged_forward_equals_the_merged_model_and_unmerge_restores_the_base(arch):
    from learngene_jax.models import lora

    kw = dict(LM_SMALL, depth=3, **({"num_kv_heads": 2} if arch == "llama" else {}))
    base = Llama(**kw) if arch == "llama" else GPT2(**kw)
    model = lora.with_lora(base, rank=4, alpha=8.0, layers=(0, 2),
                           targets=("q", "v", "down") if arch == "llama" else ("c_attn", "mlp_proj"))
    params = model.init(jax.random.key(0), TOKENS)["params"]
    assert set(params) - set(base.init(jax.random.key(0), TOKENS)["params"]) == {"lora"}
    # a fresh adapter (B = 0) changes nothing
    plain = {k: v for k, v in params.items() if k != "lora"}
    np.testing.assert_allclose(model.apply({"params": params}, TOKENS), base.apply({"params": plain}, TOKENS),
                               rtol=0, atol=1e-6)
    # trained adapters: the unmerged forward (x W + s (x A) B) equals the plain model with W + s A B
    params["lora"] = jax.tree_util.tree_map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape),
                                            params["lora"])
    merged = lora.merge(model, params)
    unmerged_logits = model.apply({"params": params}, TOKENS)
    np.testing.assert_allclose(unmerged_logits, base.apply({"params": merged}, TOKENS), rtol=0, atol=2e-5)
    assert float(jnp.abs(unmerged_logits - base.apply({"params": plain}, TOKENS)).max()) > 1e-3  # it did something
    # layer 1 carries no adapter: its weights are untouched by merge
    name = "q" if arch == "llama" else "c_attn"
    np.testing.assert_array_equal(merged["layers"][name][1], plain["layers"][name][1])
    back = lora.unmerge(model, merged, params["lora"])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), back, params)


def test_lora_scale_follows_alpha_over_rank_or_rslora():
    from learngene_jax.models import lora

    base = Llama(**dict(LM_SMALL, depth=1, num_kv_heads=2))
    assert lora.with_lora(base, rank=4, alpha=8.0).lora_scale == 2.0
    assert lora.with_lora(base, rank=4, alpha=8.0, rslora=True).lora_scale == 4.0
    with pytest.raises(ValueError, match="lora_layers"):
        lora.with_lora(base, rank=2, alpha=2.0, layers=(3,)).init(jax.random.key(0), TOKENS)


# -- language models through the trainer --------------------------------------------------------------------------
def test_text_batches_are_a_function_of_the_step_and_eval_pads_with_a_mask():
    from learngene_jax.data import text

    source = text.TextSource("t", np.frombuffer(bytes(range(256)) * 8, np.uint8), length=8, eval_windows=0)
    loader = text.TextLoader(source, 4, seed=3, train=True)
    first = [b["tokens"] for _, b in zip(range(5), loader.steps(5), strict=False)]
    resumed = next(iter(loader.steps(5, start=3)))
    np.testing.assert_array_equal(resumed["tokens"], first[3])  # resuming at step 3 gives step 3's batch
    assert all(b.shape == (4, 9) for b in first) and not np.array_equal(first[0], first[1])
    assert (np.diff(first[0], axis=1) % 256 == 1).all()  # windows of consecutive bytes: inputs and next tokens
    evaluation = text.TextLoader(text.TextSource("v", source.tokens, 8, eval_windows=6), 4, seed=0, train=False)
    batches = list(evaluation.epoch(0))
    assert [b["mask"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 0, 0]]
    loader.close()


@pytest.mark.slow
def test_lm_demo_smoke_run_through_main(transformers, tmp_path):
    from learngene_jax.genes.io import load_gene
    from learngene_jax.models.io import load_model

    run_module("learngene_jax.main", "--config=configs/lm_demo.py:smoke=True", f"--workdir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["depth"] for r in summary["rows"]] == [1, 2] and len(summary["corpus"]["sha256"]) == 64
    for row in summary["rows"]:
        for key in ("tleg", "sws"):
            assert np.isfinite(row[key]["init_loss"]) and np.isfinite(row[key]["loss"])
    assert {load_gene(tmp_path / f"{m}_aux" / "gene").meta.method for m in ("tleg", "sws")} == {"tleg_lm", "sws_lm"}
    assert np.isfinite(summary["rows"][0]["inherit"]["loss"]) and "inherit" not in summary["rows"][1]
    teacher, tv = load_model(tmp_path / "teacher" / "model")
    stream = summary["lora_stream"]  # Heur / Auto with LoRA on the teacher, against plain LoRA
    assert set(stream["arms"]) == {"lora", "heur", "auto"} and stream["chosen_layers"]["heur"] == [1]
    for arm, row in stream["arms"].items():
        assert [c["step"] for c in row["curve"]] == [0, 2, 4] and row["curve"][-1]["loss"] == row["loss"]
        lora_model, lv = load_model(tmp_path / f"lora_{arm}_email" / "model")
        jax.tree.map(np.testing.assert_array_equal, lv["params"]["layers"], tv["params"]["layers"])  # frozen base
    assert set(stream["fractions"]) == {"heur", "auto"} and (tmp_path / "lora_stream.png").is_file()
    model, variables = load_model(tmp_path / "tleg_L2" / "model")  # a fine-tuned descendant: a plain Llama
    hf.to_hf(model, variables, tmp_path / "hf")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = TOKENS % model.vocab_size
    np.testing.assert_allclose(hf_logits(loaded, tokens), np.asarray(model.apply(variables, tokens)), atol=1e-5)


def test_text_data_needs_the_lm_objective(tmp_path):
    from helpers import tiny_train_config

    from learngene_jax.errors import ConfigError
    from learngene_jax.train import train

    with pytest.raises(ConfigError, match="config.objective='lm'"):
        train(tiny_train_config(**{"data.name": "stdlib"}), tmp_path)
