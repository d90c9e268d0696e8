"""PEFT LoRA adapter directories both ways (convert/peft.py): LoRA runs' adapters and adapter genes load in PEFT 0.21
with no missing or unexpected keys and the same logits; PEFT adapters become genes and start LoRA runs with the
logits PEFT computes; what is not plain LoRA is a one-line error. Random tiny Llama and GPT-2 built here, CPU fp32."""

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import lm_smoke_config

from learngene_jax.convert.__main__ import main as convert_main
from learngene_jax.convert.hf import to_hf
from learngene_jax.errors import run
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.methods.heur import lm
from learngene_jax.models import lora
from learngene_jax.models.io import save_model
from learngene_jax.models.llama import GPT2, Llama

pytestmark = pytest.mark.torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENS = np.random.default_rng(0).integers(0, 256, (2, 12))
BASES = {  # (our model, the LoRA targets, layers, PEFT's target_modules for them)
    "llama": (Llama(vocab_size=256, width=16, depth=3, num_heads=4, num_kv_heads=2, mlp_dim=24, max_positions=32),
              ("q", "v", "up", "down"), (0, 2), ["q_proj", "v_proj", "up_proj", "down_proj"]),
    "gpt2": (GPT2(vocab_size=256, width=16, depth=3, num_heads=2, max_positions=32),
             ("c_attn", "attn_proj", "mlp_proj"), (), ["c_attn", "attn.c_proj", "mlp.c_proj"]),
}


@pytest.fixture(scope="module")
def torch_peft():
    from learngene_jax.torch_ref import import_transformers

    import_transformers()
    return pytest.importorskip("torch"), pytest.importorskip("peft")


def _base(arch, tmp_path, seed=0):
    model = BASES[arch][0]
    variables = model.init(jax.random.key(seed), jnp.asarray(TOKENS))
    return model, variables, to_hf(model, variables, tmp_path / f"hf_{arch}_{seed}")


def _trained_lora(model, variables, targets, layers, rslora=False, rank=2, alpha=3.0):
    """A LoRA model whose adapters are random and nonzero, as after training."""
    lm_model = lora.with_lora(model, rank, alpha, targets, layers, rslora)
    adapters = lm_model.init(jax.random.key(1), jnp.asarray(TOKENS))["params"]["lora"]
    keys = jax.random.split(jax.random.key(2), len(adapters))
    adapters = {k: v + 0.3 * jax.random.normal(kk, v.shape) for kk, (k, v) in zip(keys, adapters.items(), strict=True)}
    return lm_model, {"params": {**variables["params"], "lora": adapters}}


def _peft_model(torch_peft, hf_dir, adapter_dir):
    """PeftModel.from_pretrained with no warnings (PEFT warns on missing adapter keys; transformers' deprecation
    notices aside), checked again by load_adapter's own report (unexpected keys are not warned about)."""
    from transformers import AutoModelForCausalLM

    _, peft_lib = torch_peft
    base = AutoModelForCausalLM.from_pretrained(hf_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft_lib.PeftModel.from_pretrained(base, adapter_dir)
    assert [str(w.message) for w in caught if not issubclass(w.category, FutureWarning | DeprecationWarning)] == []
    report = model.load_adapter(adapter_dir, adapter_name="again")
    assert report.missing_keys == [] and report.unexpected_keys == []
    return model.eval()


def _logits(torch_peft, model):
    torch, _ = torch_peft
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


@pytest.mark.parametrize("arch", list(BASES))
@pytest.mark.parametrize("rslora", [False, True])
def test_a_lora_runs_adapters_load_in_peft_with_the_same_logits(torch_peft, arch, rslora, tmp_path):
    model, variables, hf_dir = _base(arch, tmp_path)
    _, targets, layers, names = BASES[arch]
    lm_model, lm_vars = _trained_lora(model, variables, targets, layers, rslora)
    run_dir = save_model(tmp_path / "run_model", lm_model, lm_vars)
    convert_main(["to-peft", "--model-dir", str(run_dir), "--out", str(tmp_path / "adapter"), "--base-name",
                  str(hf_dir)] + (["--rslora"] if rslora else []))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == names and config["r"] == 2 and config["use_rslora"] == rslora
    assert config["lora_alpha"] == 3 and config["layers_to_transform"] == (list(layers) or None)
    ours = np.asarray(lm_model.apply(lm_vars, jnp.asarray(TOKENS)))
    theirs = _logits(torch_peft, _peft_model(torch_peft, hf_dir, tmp_path / "adapter"))
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    plain = np.asarray(model.apply(variables, jnp.asarray(TOKENS)))
    assert np.abs(ours - plain).max() > 1e-2  # the adapters matter


def test_an_adapter_gene_of_some_layers_loads_in_peft(torch_peft, tmp_path):
    model, variables, hf_dir = _base("llama", tmp_path)
    lm_model, lm_vars = _trained_lora(model, variables, ("q", "k", "o", "gate"), ())
    gene = lm.select(lm.extract(lm_vars["params"], lm.meta_from_aux(lm_model)), (1, 2))  # Heur: the last 2 layers
    convert_main(["to-peft", "--gene", str(save_gene(tmp_path / "gene", gene)), "--out", str(tmp_path / "adapter")])
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1, 2] and config["layers_pattern"] == "layers"
    only = lora.with_lora(model, 2, 3.0, ("q", "k", "o", "gate"), (1, 2))  # the same adapters on those layers only
    ours = np.asarray(only.apply(lm_vars, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(_logits(torch_peft, _peft_model(torch_peft, hf_dir, tmp_path / "adapter")), ours,
                               atol=1e-5)


def _peft_adapter(torch_peft, hf_dir, out, **config):
    """A LoRA adapter made by PEFT itself on the Hugging Face base, its A and B random (init_lora_weights=False)."""
    from transformers import AutoModelForCausalLM

    torch, peft_lib = torch_peft
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(hf_dir)
    model = peft_lib.get_peft_model(base, peft_lib.LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False,
                                                              **config))
    model.save_pretrained(out)
    return model.eval()




@pytest.mark.parametrize("arch, targets, lora_targets, layers, rslora", [
    ("llama", ["q_proj", "v_proj", "down_proj"], ("q", "v", "down"), [1, 2], True),
    ("llama", "all-linear", ("q", "k", "v", "o", "gate", "up", "down"), None, False),
    ("gpt2", ["c_attn", "mlp.c_proj"], ("c_attn", "mlp_proj"), [0], False),
])
def test_a_peft_adapter_starts_a_lora_run_with_the_logits_peft_computes(torch_peft, arch, targets, lora_targets,
                                                                        layers, rslora, tmp_path):
    from learngene_jax.students import build_student

    _, variables, hf_dir = _base(arch, tmp_path)
    adapter = tmp_path / "adapter"
    theirs = _logits(torch_peft, _peft_adapter(torch_peft, hf_dir, adapter, r=2, lora_alpha=5, use_rslora=rslora,
                                               target_modules=targets, layers_to_transform=layers))
    cfg = lm_smoke_config(init=str(hf_dir), **{"lora.rank": 2, "lora.alpha": 5.0,
                                          "lora.rslora": rslora, "lora.targets": lora_targets,
                                          "lora.layers": tuple(layers or ()), "lora.gene": str(adapter)})
    student = build_student(cfg, 256)
    start = student.init(jax.random.key(3), student.source)
    np.testing.assert_allclose(np.asarray(student.model.apply(start, jnp.asarray(TOKENS))), theirs, atol=1e-5)
    convert_main(["from-peft", "--adapter", str(adapter), "--base", str(hf_dir), "--out", str(tmp_path / "gene")])
    gene = load_gene(tmp_path / "gene")
    assert gene.meta.targets == lora_targets and gene.meta.layers == tuple(layers or range(3))
    assert gene.meta.base_fingerprint == lm.fingerprint(variables["params"])
    convert_main(["to-peft", "--gene", str(tmp_path / "gene"), "--out", str(tmp_path / "back")] +
                 (["--rslora"] if rslora else []))
    back = json.loads((tmp_path / "back" / "adapter_config.json").read_text())
    assert back["lora_alpha"] == 5 and back["use_rslora"] == rslora
    np.testing.assert_allclose(_logits(torch_peft, _peft_model(torch_peft, hf_dir, tmp_path / "back")), theirs,
                               atol=1e-5)


def _edit(adapter, **changes):
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("change, message", [
    ({"use_dora": True}, "use_dora=True is not plain LoRA"),
    ({"peft_type": "IA3"}, "is a PEFT IA3 adapter; learngene reads LoRA adapters"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save=['lm_head'] is not plain LoRA"),
    ({"bias": "all"}, "bias='all' is not plain LoRA"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' (the adapter fits a base PEFT rewrote"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern={'q_proj': 4} is not plain LoRA"),
    ({"target_modules": ["q_proj", "embed_tokens"], "layers_to_transform": None},
     "puts LoRA on model.embed_tokens; learngene adapts the decoder"),
    ({"target_modules": ["c_attn"]}, "selects none of this llama's layer weights"),
    ({"target_modules": r"model\.layers\.0\.self_attn\.q_proj|model\.layers\.1\.self_attn\.v_proj"},
     "adapts different weights in different layers"),
    ({"target_modules": ["q_proj", "v_proj", "k_proj"]}, "2 problems (2 missing): missing key "
                                                         "base_model.model.model.layers.0.self_attn.k_proj.lora_A"),
    ({"r": 4}, "lora_A has shape (2, 16) but adapter_config.json sets r=4"),
    ({"task_type": "SEQ_CLS"}, "adapts a SEQ_CLS model"),
])
def test_what_is_not_plain_lora_for_this_base_is_a_one_line_error(torch_peft, tmp_path, capsys, change, message):
    _, _, hf_dir = _base("llama", tmp_path)
    adapter = tmp_path / "adapter"
    _peft_adapter(torch_peft, hf_dir, adapter, r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                  layers_to_transform=[0])
    _edit(adapter, **change)
    capsys.readouterr()  # transformers' loading bars
    with pytest.raises(SystemExit) as exit_:
        run(convert_main, ["from-peft", "--adapter", str(adapter), "--base", str(hf_dir), "--out",
                           str(tmp_path / "gene")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert message in err[0], err[0]


def test_an_adapter_of_another_base_is_named(torch_peft, tmp_path, capsys):
    wide = Llama(vocab_size=256, width=32, depth=3, num_heads=4, num_kv_heads=2, mlp_dim=24, max_positions=32)
    wide_dir = to_hf(wide, wide.init(jax.random.key(0), jnp.asarray(TOKENS)), tmp_path / "wide")
    _peft_adapter(torch_peft, wide_dir, tmp_path / "adapter", r=2, lora_alpha=4, target_modules=["q_proj"])
    _, _, hf_dir = _base("llama", tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run(convert_main, ["from-peft", "--adapter", str(tmp_path / "adapter"), "--base", str(hf_dir), "--out",
                           str(tmp_path / "gene")])
    err = capsys.readouterr().err.strip()
    assert "was made for another base model" in err and "lora_A has shape (2, 32)" in err and "\n" not in err
    cfg = lm_smoke_config(init=str(hf_dir), **{"lora.rank": 2, "lora.alpha": 4.0, "lora.targets": ("q",),
                                          "lora.gene": str(tmp_path / "adapter")})
    from learngene_jax.errors import ConversionError
    from learngene_jax.students import build_student

    with pytest.raises(ConversionError, match="was made for another base model"):
        build_student(cfg, 256)


def test_to_peft_refuses_what_holds_no_adapters(tmp_path, capsys):
    model = BASES["llama"][0]
    variables = model.init(jax.random.key(0), jnp.asarray(TOKENS))
    plain = save_model(tmp_path / "plain", model, variables)
    with pytest.raises(SystemExit):
        run(convert_main, ["to-peft", "--model-dir", str(plain), "--out", str(tmp_path / "adapter")])
    assert "holds a Llama without LoRA adapters" in capsys.readouterr().err


def test_an_adapter_saved_in_bfloat16_reads(torch_peft, tmp_path):
    from safetensors.torch import load_file, save_file

    torch, _ = torch_peft
    _, variables, hf_dir = _base("llama", tmp_path)
    adapter = tmp_path / "adapter"
    _peft_adapter(torch_peft, hf_dir, adapter, r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, adapter / "adapter_model.safetensors")
    convert_main(["from-peft", "--adapter", str(adapter), "--base", str(hf_dir), "--out", str(tmp_path / "gene")])
    gene = load_gene(tmp_path / "gene")
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    np.testing.assert_array_equal(gene.params["lora"]["v_lora_b"][1], weights[key].to(torch.bfloat16).float().numpy().T)
