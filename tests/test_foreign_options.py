"""Checkpoints from the wild through the CLI (issue 25, items 8 and 9): GPT-2 options that compute the same function
convert with transformers' logits, options that do not are named; timm ViTs with another activation or a non-square
patch grid are named; PEFT adapter directories and checkpoints saved with LoRA still injected are named with the fix."""

import json

import numpy as np
import pytest
from conftest import run_module

from learngene_jax.convert.hf import GPT2_TANH_GELUS
from learngene_jax.models.io import load_model

pytestmark = pytest.mark.torch
VOCAB = 97
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 13))
GPT2_TINY = dict(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0)


@pytest.fixture(scope="module")
def transformers():
    from learngene_jax.torch_ref import import_transformers

    return import_transformers()


def _gpt2(transformers, path, **options):
    import torch

    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2_TINY, **options)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(path)
    return model


def _refused(proc, *named):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for text in named:
        assert text in lines[0], lines[0]


def _from_hf(src, out, check=True):
    return run_module("learngene_jax.convert", "from-hf", "--checkpoint", str(src), "--out", str(out), check=check)


# -- item 8: GPT-2 options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation, reorder", [("gelu_pytorch_tanh", True), ("gelu_new", True),
                                                 *((a, False) for a in GPT2_TANH_GELUS if a != "gelu_new")])
def test_gpt2_options_that_compute_the_same_function_convert_with_transformers_logits(transformers, tmp_path,
                                                                                     activation, reorder):
    """Every tanh-GELU spelling and reorder_and_upcast_attn (eager attention, the path that honours it): the
    converted model's logits equal transformers' to 1e-5 (float32)."""
    import torch

    ref = _gpt2(transformers, tmp_path / "hf", activation_function=activation, reorder_and_upcast_attn=reorder,
                attn_implementation="eager")
    _from_hf(tmp_path / "hf", tmp_path / "m")
    model, variables = load_model(tmp_path / "m")
    with torch.no_grad():
        want = ref(torch.tensor(TOKENS)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model.apply(variables, TOKENS)), want, rtol=0, atol=1e-5)


# the exact erf GELU ("gelu") converts since GPT-2 has gelu_approximate=False (tests/test_nanogpt.py, nanoGPT's)
@pytest.mark.parametrize("options, named", [
    ({"activation_function": "quick_gelu"}, "activation_function='quick_gelu'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=true"),
])
def test_gpt2_options_that_change_the_function_are_named(transformers, tmp_path, options, named):
    _gpt2(transformers, tmp_path / "hf", **options)
    _refused(_from_hf(tmp_path / "hf", tmp_path / "m", check=False), named)
    assert not (tmp_path / "m").exists()


# -- item 8: timm ViTs -----------------------------------------------------------------------------------------
def _timm_saved(timm, path, arch, **kw):
    """timm.create_model(arch, tiny sizes) written by timm's own save_for_hf (model.safetensors + config.json)."""
    import torch

    torch.manual_seed(0)
    model = timm.create_model(arch, **dict(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                                           num_classes=10) | kw)
    timm.models.save_for_hf(model, str(path), safe_serialization=True)
    return model


def _from_timm(checkpoint, out):
    return run_module("learngene_jax.convert", "from-timm", "--checkpoint", str(checkpoint), "--out", str(out),
                      "--num-heads", "3", check=False)


@pytest.mark.parametrize("arch, kw, act", [
    ("vit_so400m_patch16_siglip_gap_256", {}, "gelu_tanh"),  # SigLIP 2: plain ViT keys, tanh GELU
    ("vit_base_patch32_clip_quickgelu_224", {}, "quick_gelu"),
    ("vit_tiny_patch16_224", {"act_layer": "gelu_tanh"}, "gelu_tanh"),  # recorded in config.json's model_args
])
def test_timm_vits_with_another_activation_are_named_not_converted_with_exact_gelu(timm, tmp_path, arch, kw, act):
    _timm_saved(timm, tmp_path / "t", arch, **kw)
    _refused(_from_timm(tmp_path / "t" / "model.safetensors", tmp_path / "m"), f"act_layer={act!r}", "exact GELU")
    assert not (tmp_path / "m").exists()


def test_timm_vit_with_exact_gelu_and_its_config_still_converts(timm, tmp_path):
    """The SigLIP 1 ports use exact GELU: their config.json is no reason to refuse (logits equal timm's, 1e-5)."""
    import torch

    ref = _timm_saved(timm, tmp_path / "t", "vit_base_patch16_siglip_gap_224").eval()
    proc = _from_timm(tmp_path / "t" / "model.safetensors", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    model, variables = load_model(tmp_path / "m")
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(model.apply(variables, x)), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("with_config", [True, False])
def test_non_square_patch_grids_are_named_with_their_sizes(timm, tmp_path, with_config):
    """64×24 px in 8 px patches: 8×3 = 24 positions + the class token = 25 rows, a square number that the old check
    took for a table without a class-token row. timm's config.json gives the image size; without it both readings
    are named, the non-square grid first."""
    _timm_saved(timm, tmp_path / "t", "vit_tiny_patch16_224", img_size=(64, 24))
    if not with_config:
        (tmp_path / "t" / "config.json").unlink()
    proc = _from_timm(tmp_path / "t" / "model.safetensors", tmp_path / "m")
    if with_config:
        _refused(proc, "64×24 px", "8×3 patches", "non-square patch grid")
        assert "class-token row" not in proc.stderr
    else:
        _refused(proc, "non-square patch grid of 24 positions", "8×3")


# -- item 9: PEFT directories ----------------------------------------------------------------------------------
def _peft_adapter(path, base="openai-community/gpt2", weights="adapter_model.safetensors"):
    """What PEFT's save_pretrained writes for LoRA on GPT-2 (peft/utils/constants.py names; keys as
    get_peft_model_state_dict leaves them, the adapter name removed)."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": 2, "lora_alpha": 4,
        "target_modules": ["c_attn"], "fan_in_fan_out": True, "use_rslora": False}))
    rng = np.random.default_rng(0)
    tensors = {f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{ab}.weight": rng.standard_normal(shape, "f4")
               for i in range(2) for ab, shape in (("A", (2, 16)), ("B", (48, 2)))}
    if weights.endswith(".safetensors"):
        save_file(tensors, str(path / weights))
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path / weights)
    return path


@pytest.mark.parametrize("weights", ["adapter_model.safetensors", "adapter_model.bin"])
def test_peft_adapter_directory_is_named_with_the_merge_fix_in_from_hf(tmp_path, weights):
    adapter = _peft_adapter(tmp_path / "adapter", weights=weights)
    _refused(_from_hf(adapter, tmp_path / "m", check=False), "is a PEFT adapter", weights,
             "openai-community/gpt2", "merge_and_unload()", "save_pretrained")


def test_peft_adapter_directory_is_named_as_train_init(tmp_path):
    adapter = _peft_adapter(tmp_path / "adapter")
    proc = run_module("learngene_jax.main", "--config=configs/lm_lora.py:smoke=True", f"--config.init={adapter}",
                      f"--workdir={tmp_path / 'w'}", check=False)  # what `learngene train` runs
    _refused(proc, "is a PEFT adapter", "merge_and_unload()")
    assert "convert foreign checkpoints" not in proc.stderr


def test_checkpoint_saved_with_lora_still_injected_is_named(transformers, tmp_path):
    """get_base_model().save_pretrained() without merging: PEFT's LoraLayer keeps the original weight under
    `base_layer` and the adapters under `lora_A.<adapter>` / `lora_B.<adapter>` (here 'default')."""
    from safetensors.numpy import load_file, save_file

    _gpt2(transformers, tmp_path / "hf")
    sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
    injected = {}
    for key, value in sd.items():
        if ".attn.c_attn." in key:
            layer, leaf = key.rsplit(".", 1)
            injected[f"{layer}.base_layer.{leaf}"] = value
            if leaf == "weight":
                injected[f"{layer}.lora_A.default.weight"] = np.zeros((2, 16), "f4")
                injected[f"{layer}.lora_B.default.weight"] = np.zeros((48, 2), "f4")
        else:
            injected[key] = value
    save_file(injected, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    _refused(_from_hf(tmp_path / "hf", tmp_path / "m", check=False), "LoRA layers still injected",
             "c_attn.base_layer", "model = model.merge_and_unload()", "save_pretrained")
