"""Losses, metrics, optimizer rules and Mixup/CutMix against hand-computed values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from learngene_jax.config_lib import base_config
from learngene_jax.data.mix import cutmix_mask, mix_batch, smooth_one_hot
from learngene_jax.errors import ConfigError
from learngene_jax.models import create_model
from learngene_jax.models.vit import abstract_params
from learngene_jax.objectives.losses import (
    distillation_loss,
    kd_hard,
    kd_soft,
    soft_target_cross_entropy,
    topk_correct,
)
from learngene_jax.optim import decay_mask, lr_schedule, peak_lr


def log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
T = np.array([[1.0, 1.0, 0.0], [-2.0, 0.0, 1.0]], np.float32)


def test_soft_target_cross_entropy_by_hand():
    targets = np.array([[0.9, 0.05, 0.05], [0.0, 0.5, 0.5]], np.float32)
    want = -(targets * log_softmax(S)).sum(-1).mean()
    np.testing.assert_allclose(soft_target_cross_entropy(S, targets), want, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_soft_is_the_deit_formula(temperature):
    ls, lt = log_softmax(S / temperature), log_softmax(T / temperature)
    want = (np.exp(lt) * (lt - ls)).sum() * temperature**2 / S.size  # KL summed / (batch · classes)
    np.testing.assert_allclose(kd_soft(S, T, temperature), want, rtol=1e-5)  # float32 vs float64


def test_kd_of_identical_logits_is_zero():
    assert float(kd_soft(S, S, 1.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(kd_soft(S, S, 3.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(S, smooth_one_hot(jnp.array([0, 2]), 3, 0.0), S, "soft", 1.0, 2.0)) == \
        pytest.approx(0.0, abs=1e-7)


def test_hard_kd_and_the_mixture():
    want_hard = -(log_softmax(S)[0, 0] + log_softmax(S)[1, 2]) / 2  # teacher argmax: 0 (tie → first), 2
    np.testing.assert_allclose(kd_hard(S, T), want_hard, rtol=1e-6)
    targets = np.eye(3, dtype=np.float32)[[1, 2]]
    for alpha in (0.0, 0.3, 1.0):
        want = (1 - alpha) * -(targets * log_softmax(S)).sum(-1).mean() + alpha * float(kd_soft(S, T, 2.0))
        np.testing.assert_allclose(distillation_loss(S, targets, T, "soft", alpha, 2.0), want, rtol=1e-6)


def test_topk():
    labels = jnp.array([1, 1])
    np.testing.assert_array_equal(topk_correct(S, labels, 1), [0, 0])
    np.testing.assert_array_equal(topk_correct(S, labels, 2), [1, 1])


def test_no_decay_mask_on_a_vit():
    mask = decay_mask(abstract_params(create_model("deit_ti", image_size=32, patch_size=8, num_classes=10)))
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed == ["blocks/fc1/kernel", "blocks/fc2/kernel", "blocks/proj/kernel", "blocks/qkv/kernel",
                       "head/kernel", "patch_embed/kernel"]
    for key in ("pos_embed", "cls_token", "blocks/norm1/scale", "blocks/qkv/bias", "norm/bias", "head/bias"):
        assert flat[key] is False


def test_no_decay_mask_on_tleg_gene():
    mask = decay_mask(abstract_params(create_model("tleg_aux_ti")))
    assert mask["blocks"]["theta_a"]["fc1"]["kernel"] and mask["blocks"]["theta_b"]["qkv"]["kernel"]
    assert not mask["blocks"]["theta_a"]["norm1"]["scale"] and not mask["blocks"]["theta_b"]["fc1"]["bias"]


def test_lr_schedule_warmup_cosine_and_batch_scaling():
    opt = base_config().optim
    opt.update(dict(lr=5e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=2))
    assert peak_lr(opt, 1024) == pytest.approx(1e-3)
    schedule = lr_schedule(opt, 1024, steps_per_epoch=10, total_steps=100)
    assert float(schedule(0)) == pytest.approx(1e-6, rel=1e-4)
    assert float(schedule(10)) == pytest.approx((1e-6 + 1e-3) / 2, rel=1e-5)
    assert float(schedule(20)) == pytest.approx(1e-3, rel=1e-5)
    assert float(schedule(60)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-4)  # half-way down the cosine
    assert float(schedule(100)) == pytest.approx(1e-5, rel=1e-4)
    opt.scale_lr = False
    assert peak_lr(opt, 1024) == 5e-4


def test_label_smoothing_and_no_mixing():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    images, targets = mix_batch(jax.random.key(0), x, jnp.array([0, 3]), 4, mixup_alpha=0, cutmix_alpha=0,
                                smoothing=0.1)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_allclose(targets, [[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.025, 0.925]])


def test_mixup_is_lambda_blend_with_mirrored_batch():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    labels = jnp.array([0, 1, 2, 3])
    for seed in range(6):
        images, targets = mix_batch(jax.random.key(seed), x, labels, 4, mixup_alpha=0.8, cutmix_alpha=0.0,
                                    smoothing=0.0)
        lam = float(targets[0, 0])  # example 0 is mixed with example 3
        np.testing.assert_allclose(images, lam * x + (1 - lam) * x[::-1], atol=1e-6)
        np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
        np.testing.assert_allclose(targets[0, 3], 1 - lam, atol=1e-6)


def test_cutmix_lambda_is_the_kept_area():
    x = jnp.zeros((2, 16, 16, 1)).at[1].set(1.0)
    for seed in range(6):
        images, targets = mix_batch(jax.random.key(seed), x, jnp.array([0, 1]), 2, mixup_alpha=0.0,
                                    cutmix_alpha=1.0, smoothing=0.0)
        pasted = float(images[0].mean())  # example 0 is zeros; the box holds ones from example 1
        np.testing.assert_allclose(targets[0], [1 - pasted, pasted], atol=1e-6)
    mask, lam = cutmix_mask(jax.random.key(3), jnp.float32(0.75), 16, 16)
    assert float(lam) == pytest.approx(1 - float(mask.mean()))


def test_each_device_group_mixes_as_its_own_batch():
    """As the official harness's one Mixup per GPU: every group mixes inside itself, with its own λ, switch and
    box; one group draws from the key itself (single-device runs keep their draws)."""
    x = jnp.arange(8, dtype=jnp.float32)[:, None, None, None] * jnp.ones((8, 2, 2, 1))
    key = jax.random.key(0)
    images, _ = mix_batch(key, x, jnp.arange(8), 8, mixup_alpha=0.8, cutmix_alpha=0.0, smoothing=0.0, groups=2)
    values = np.asarray(images[:, 0, 0, 0])
    for group, (first, last) in enumerate(((0, 3), (4, 7))):  # example `first` mixes with `last`, its mirror
        alone, _ = mix_batch(jax.random.split(key, 2)[group], x[first:last + 1], jnp.arange(4), 8, mixup_alpha=0.8,
                             cutmix_alpha=0.0, smoothing=0.0)
        np.testing.assert_allclose(values[first:last + 1], np.asarray(alone[:, 0, 0, 0]), atol=1e-6)
    lams = [(values[0] - 3) / (0 - 3), (values[4] - 7) / (4 - 7)]
    assert abs(lams[0] - lams[1]) > 1e-3  # two independent draws
    whole, _ = mix_batch(key, x, jnp.arange(8), 8, mixup_alpha=0.8, cutmix_alpha=0.0, smoothing=0.0)
    lam = (float(whole[0, 0, 0, 0]) - 7) / (0 - 7)
    np.testing.assert_allclose(np.asarray(whole[:, 0, 0, 0]), lam * np.arange(8) + (1 - lam) * np.arange(8)[::-1],
                               atol=1e-5)
    # over many steps, groups switch between mixup and cutmix independently (switch prob 0.5)
    y = jnp.zeros((8, 8, 8, 1)).at[jnp.array([3, 7])].set(1.0)
    disagree = 0
    for seed in range(20):
        mixed, _ = mix_batch(jax.random.key(seed), y, jnp.arange(8), 8, mixup_alpha=0.8, cutmix_alpha=1.0,
                             smoothing=0.0, groups=2)
        kinds = [bool(np.isin(np.unique(np.asarray(mixed[g])), [0.0, 1.0]).all()) for g in (0, 4)]  # cutmix: 0/1
        disagree += kinds[0] != kinds[1]
    assert disagree >= 3


def test_base_config_is_locked_against_typos():
    c = base_config()
    c.lock()
    with pytest.raises(AttributeError):
        c.optim.weight_decy = 0.1
    assert isinstance(c, ml_collections.ConfigDict)


@pytest.mark.parametrize("method,size,rate", [("tleg", "s", 0.0), ("tleg", "b", 0.0), ("tleg", "ti", 0.0),
                                              ("sws", "s", 0.1), ("sws", "b", 0.1)])
def test_aux_drop_path_follows_the_official_commands(method, size, rate):
    """TLEG's README commands train Aux-S/Aux-B with --drop-path 0.0; SWS's aux keeps DeiT's default 0.1."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("cfg", REPO / "configs" / f"{method}_{size}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config("stage=aux").model.drop_path_rate == rate
    assert module.get_config("stage=descendant,depth=6").model.drop_path_rate == 0.1


@pytest.mark.torch
@pytest.mark.parametrize("recipe", ["tleg_s:stage=aux", "tleg_b:stage=descendant,depth=6",
                                    "sws_s:stage=descendant,depth=12"])
def test_official_per_epoch_schedule_equals_timm_as_main_py_drives_it(timm, recipe):
    """configs/{tleg,sws}_*.py use 'cosine_epoch': every epoch's lr equals the one timm's CosineLRScheduler gives
    when the official main.py builds it (create_scheduler: t_initial=epochs, warmup_t, warmup_lr_init, lr_min)
    and calls step(epoch) after each epoch."""
    import importlib.util

    import timm.scheduler  # after the fixture's torchvision work-around
    import torch
    from conftest import REPO

    name, arg = recipe.split(":")
    spec = importlib.util.spec_from_file_location("cfg", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(arg)
    assert c.optim.schedule == "cosine_epoch"
    steps_per_epoch, batch = 7, 1024
    schedule = lr_schedule(c.optim, batch, steps_per_epoch, c.epochs * steps_per_epoch)
    peak = c.optim.lr * batch / 512
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    ref = timm.scheduler.CosineLRScheduler(optimizer, t_initial=c.epochs, lr_min=c.optim.min_lr,
                                           warmup_lr_init=c.optim.warmup_lr, warmup_t=int(c.optim.warmup_epochs),
                                           cycle_limit=1, t_in_epochs=True)
    for epoch in range(c.epochs):
        want = optimizer.param_groups[0]["lr"]
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            assert float(schedule(step)) == pytest.approx(want, rel=1e-6), (epoch, step)
        ref.step(epoch)
    assert float(schedule(0)) == float(schedule(steps_per_epoch))  # epochs 0 and 1 share the first value
    assert float(schedule(c.epochs * steps_per_epoch - 1)) > c.optim.min_lr  # never reaches min_lr


def test_per_epoch_schedule_needs_whole_warmup_epochs():
    opt = base_config().optim
    opt.update({"schedule": "cosine_epoch", "warmup_epochs": 0.5})
    with pytest.raises(ConfigError, match="warmup_epochs must be a whole number"):
        lr_schedule(opt, 512, 10, 100)


def test_imagenet_recipes_compute_in_bf16_on_accelerators_and_fp32_on_cpu(monkeypatch):
    import jax.numpy as jnp

    from learngene_jax import train as trainer
    from learngene_jax.config_lib import load_config

    assert load_config("configs/tleg_s.py", "stage=aux").precision == "auto"
    assert trainer.compute_dtype("auto") == jnp.float32  # tests run on CPU
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert trainer.compute_dtype("auto") == jnp.bfloat16
    assert trainer.compute_dtype("float32") == jnp.float32
    with pytest.raises(ConfigError, match="precision must be auto, float32 or bfloat16"):
        trainer.compute_dtype("fp16")
