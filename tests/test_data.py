"""Data: the bundled digits through tfds, deterministic sharded batches, users' arrays and folders, transforms."""

import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from learngene_jax import data
from learngene_jax.config_lib import base_config
from learngene_jax.data import transforms
from learngene_jax.data.digits import digits_split
from learngene_jax.data.pipeline import Loader, batch_positions, epoch_order
from learngene_jax.data.sources import ArraySource, FolderSource, npz_source
from learngene_jax.errors import DataError


def digits_cfg():
    return base_config()


def test_digits_split_is_fixed_and_stratified():
    split = digits_split()
    assert (len(split["train"]), len(split["test"])) == (1347, 450)
    assert not set(split["train"]) & set(split["test"])
    from sklearn.datasets import load_digits

    target = load_digits().target
    counts = np.bincount(target[split["test"]], minlength=10)
    assert np.abs(counts - np.bincount(target) * 450 / len(target)).max() <= 1


def test_digits_through_tfds():
    c = digits_cfg()
    train = data.make_source(c.data, "train")
    test = data.make_source(c.data, "test")
    assert (len(train), len(test), train.num_classes) == (1347, 450, 10)
    images, labels = train.get([0, 5, 7])
    assert images[0].shape == (8, 8, 1) and images[0].dtype == np.uint8 and images[0].max() > 200
    from sklearn.datasets import load_digits

    d = load_digits()
    records = train._open().__getitems__([0, 5, 7])  # the `index` feature points back into load_digits()
    origin = [int(r["index"]) for r in records]
    assert set(origin) <= set(digits_split()["train"])
    np.testing.assert_array_equal(labels, d.target[origin])
    np.testing.assert_array_equal(images[1][..., 0], np.round(d.images[origin[1]] * 255 / 16).astype(np.uint8))


PLAIN = transforms.TransformConfig(image_size=2, channels=1, mean=(0.0,), std=(1.0,), crop_pct=1.0,
                                   random_resized_crop=False, flip=False, randaugment=False, random_erasing=0.0)


def _loader(source, batch, train, **kw):
    return Loader(source, PLAIN, batch, seed=3, train=train, **kw)


def _ids(batch):
    return batch["images"][:, 0, 0, 0].astype(int)


def test_batches_are_deterministic_and_split_over_processes():
    source = ArraySource(np.arange(50, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8),
                         np.arange(50) % 7, 7)
    whole = list(_loader(source, 8, True).epoch(1))
    again = list(_loader(source, 8, True).epoch(1))
    assert len(whole) == 6 and whole[0]["images"].dtype == np.uint8
    for a, b in zip(whole, again, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
    parts = [[_ids(b) for b in _loader(source, 8, True, process_index=p, process_count=2).epoch(1)] for p in range(2)]
    ids = [np.concatenate([a, b]) for a, b in zip(*parts, strict=True)]
    order = epoch_order(50, 3, 1, True)
    for step, got in enumerate(ids):
        np.testing.assert_array_equal(got, order[step * 8:(step + 1) * 8])
    other_epoch = [_ids(b) for b in _loader(source, 8, True).epoch(2)]
    assert any((a != _ids(b)).any() for a, b in zip(other_epoch, whole, strict=True))
    resumed = [_ids(b) for b in _loader(source, 8, True).epoch(1, start_step=4)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate([_ids(b) for b in whole[4:]]))
    # the training stream is one sequence of global steps: step k of it is batch k % 6 of epoch k // 6
    loader = _loader(source, 8, True)
    steps = loader.steps(12, start=6)
    for b in whole:
        np.testing.assert_array_equal(next(steps)["images"], b["images"])
    loader.close()


def test_repeated_copies_are_dealt_to_different_devices():
    source = ArraySource(np.arange(48, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8),
                         np.zeros(48), 1)
    loader = _loader(source, 12, True, repeats=3, device_shards=4)
    order = epoch_order(48, 3, 0, True, repeats=3)
    for step, batch in enumerate(loader.epoch(0)):
        rows = _ids(batch).reshape(4, 3)  # (device, row on the device)
        np.testing.assert_array_equal(rows.reshape(-1), order[batch_positions(step, 12, 4, True)])
        for device in rows:  # DeiT's RASampler: each device gets one copy of 3 different examples
            assert len(set(device.tolist())) == 3
    np.testing.assert_array_equal(batch_positions(0, 6, 3, True), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(batch_positions(1, 6, 3, False), np.arange(6, 12))


def test_eval_batches_cover_everything_once_with_a_padding_mask():
    source = ArraySource(np.arange(21, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8),
                         np.arange(21) % 3, 3)
    batches = list(_loader(source, 8, False).epoch(0))
    assert len(batches) == 3
    masks = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([_ids(b) for b in batches])
    assert masks.sum() == 21 and (masks[21:] == 0).all()
    np.testing.assert_array_equal(ids[:21], np.arange(21))


DEIT_LIKE = dict(image_size=16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
                 random_resized_crop=True, flip=True, randaugment=True, random_erasing=0.5)


def _augmenting_config(**data):
    c = base_config()
    c.data.update(dict(mean=DEIT_LIKE["mean"], std=DEIT_LIKE["std"], interpolation="bicubic", **data))
    c.aug.update(dict(random_resized_crop=True, flip=True, randaugment=True, random_erasing=0.5, repeated_aug=3))
    return c


def test_same_batches_with_0_1_and_2_worker_processes():
    runs = {}
    for workers in (0, 1, 2):
        loader = data.make_loader(_augmenting_config(workers=workers), "train", train=True, batch_size=16,
                                  device_shards=2)
        steps = loader.steps(loader.steps_per_epoch + 2, start=loader.steps_per_epoch - 1)  # across an epoch end
        runs[workers] = [next(steps) for _ in range(3)]
        loader.close()
    first = runs[0][0]
    assert first["images"].dtype == np.uint8 and first["images"].shape == (16, 16, 16, 3)
    assert first["erase"].shape == (16, 4) and (first["erase"][:, 2] > 0).any()  # some boxes at p = 0.5
    for workers in (1, 2):
        for a, b in zip(runs[0], runs[workers], strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_repeated_copies_share_the_example_but_not_the_augmentation():
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 255, (30, 20, 20, 3), dtype=np.uint8), np.arange(30), 30)
    cfg = transforms.TransformConfig(**DEIT_LIKE)
    loader = Loader(source, cfg, 30, seed=0, train=True, repeats=3)
    batch = next(loader.epoch(0))
    labels = batch["labels"]
    assert sorted(np.bincount(labels)[np.bincount(labels) > 0]) == [3] * 10  # 10 examples, 3 copies each
    for label in set(labels.tolist()):
        copies = batch["images"][labels == label]
        assert all((copies[i] != copies[j]).any() for i, j in ((0, 1), (0, 2), (1, 2)))


def test_device_normalisation_matches_the_float32_host_transform():
    import jax.numpy as jnp

    from learngene_jax.data import device

    rng = np.random.default_rng(0)
    cfg = transforms.TransformConfig(**{**DEIT_LIKE, "image_size": 24, "random_erasing": 1.0})
    for k in range(6):
        image = rng.integers(0, 255, (30 + k, 40, 3), dtype=np.uint8)
        host = transforms.train_transform(image, np.random.default_rng(k), cfg)
        pixels, box = transforms.augment(image, np.random.default_rng(k), cfg)
        assert pixels.dtype == np.uint8
        normalised = np.asarray(device.normalize(jnp.asarray(pixels[None]), cfg.mean, cfg.std))[0]
        top, left, h, w = box
        inside = np.zeros(host.shape[:2], bool)
        inside[top:top + h, left:left + w] = True
        assert h and w and not inside.all()
        # same crop, flip, RandAugment and erasing decisions: identical normalised pixels outside the box
        np.testing.assert_array_equal(normalised[~inside], host[~inside])
        erased = np.asarray(device.prepare_batch({"images": jnp.asarray(pixels[None]),
                                                  "erase": jnp.asarray(np.asarray([box], np.int32))},
                                                 cfg.mean, cfg.std, jax_key(k)))[0]
        np.testing.assert_array_equal(erased[~inside], normalised[~inside])
        assert (erased[inside] != normalised[inside]).all() and abs(erased[inside].std() - 1) < 0.35
        ev = transforms.eval_transform(image, cfg)
        ev_device = np.asarray(device.normalize(jnp.asarray(transforms.eval_image(image, cfg)[None]), cfg.mean,
                                                cfg.std))[0]
        np.testing.assert_array_equal(ev_device, ev)


def jax_key(seed):
    import jax

    return jax.random.key(seed)


def test_every_source_kind_through_the_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train_images=rng.integers(0, 255, (12, 6, 6, 3), dtype=np.uint8),
             train_labels=np.arange(12) % 4)
    for cls in ("ant", "cat"):
        (tmp_path / "f" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(
                tmp_path / "f" / "train" / cls / f"{i}.jpg")
    kinds = {"digits": {}, "npz": {"path": str(tmp_path / "d.npz")}, "folder": {"path": str(tmp_path / "f")},
             "digits_task": {"classes": (7, 2), "shots": 3}}
    for kind, extra in kinds.items():
        c = base_config()
        c.data.update(dict(name="digits" if kind == "digits_task" else kind, image_size=8, workers=1, **extra))
        loader = data.make_loader(c, "train", train=True, batch_size=4)
        batch = next(loader.epoch(0))
        loader.close()
        assert batch["images"].shape == (4, 8, 8, 3) and batch["images"].dtype == np.uint8, kind
        assert batch["labels"].dtype == np.int32 and batch["labels"].max() < loader.source.num_classes, kind


def test_repeated_augmentation_order():
    order = epoch_order(10, 0, 0, True, repeats=3)
    assert len(order) == 10 and all((order[i] == order[i + 1] == order[i + 2]) for i in (0, 3, 6))


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train_images=rng.integers(0, 255, (12, 6, 6, 3), dtype=np.uint8),
             train_labels=np.arange(12) % 4, test_images=rng.integers(0, 255, (5, 6, 6), dtype=np.uint8),
             test_labels=np.arange(5) % 4)
    train, test = npz_source(tmp_path / "d.npz", "train"), npz_source(tmp_path / "d.npz", "test")
    assert (len(train), train.num_classes, len(test)) == (12, 4, 5)
    assert test.get([1])[0][0].shape == (6, 6, 1)
    with pytest.raises(DataError, match="no val_images/val_labels"):
        npz_source(tmp_path / "d.npz", "val")
    with pytest.raises(DataError, match="no .npz at"):
        npz_source(tmp_path / "missing.npz", "train")


def test_folder_source(tmp_path):
    for cls in ("cat", "ant"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((5, 7, 3), i * 40, np.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    source = FolderSource(tmp_path, "train")
    assert (len(source), source.num_classes, source.classes) == (6, 2, ["ant", "cat"])
    images, labels = source.get([0, 5])
    assert images[0].shape == (5, 7, 3) and list(labels) == [0, 1]
    with pytest.raises(DataError, match="no image folder"):
        FolderSource(tmp_path, "val")


def test_folder_split_missing_a_class_keeps_the_ids_and_empty_classes_are_refused(tmp_path):
    for split, classes in (("train", ("ant", "bee", "cat")), ("val", ("ant", "cat"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / cls / "0.png")
    (tmp_path / "notes").mkdir()  # not a split: no class folders with images
    val = FolderSource(tmp_path, "val")
    assert val.num_classes == 3 and list(val.labels()) == [0, 2]  # cat is class 2 as in train, not 1
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(DataError, match=r"class folders without images under .*\['dog'\]"):
        FolderSource(tmp_path, "train")


def test_missing_tfds_dataset_says_how_to_build_it(tmp_path):
    c = base_config()
    c.data.update(dict(name="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="tfds build cifar10 --data_dir .* --file_format=array_record"):
        data.make_source(c.data, "train")


def test_train_and_eval_transforms():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    cfg = transforms.TransformConfig(image_size=32)
    out = transforms.train_transform(image, np.random.default_rng(1), cfg)
    again = transforms.train_transform(image, np.random.default_rng(1), cfg)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, again)
    ev = transforms.eval_transform(image, cfg)
    assert ev.shape == (32, 32, 3)
    # crop_pct 0.875: shorter side resized to 36, center 32 crop
    gray = transforms.eval_transform(rng.integers(0, 255, (8, 8, 1), dtype=np.uint8),
                                     transforms.TransformConfig(image_size=16, crop_pct=1.0, channels=3,
                                                                mean=(0.5,) * 3, std=(0.5,) * 3))
    assert gray.shape == (16, 16, 3) and np.allclose(gray[..., 0], gray[..., 2])


def test_random_resized_crop_boxes_are_inside():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = transforms.random_resized_crop_box(60, 40, rng)
        assert 0 <= left and left + w <= 60 and 0 <= top and top + h <= 40 and w > 0 and h > 0


class _FixedSign:
    """A stand-in Generator whose `random()` always gives `value` (our ops negate below 0.5)."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


@pytest.mark.torch
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_every_randaugment_op_matches_timms_op(timm, monkeypatch, interpolation):
    """timm's own RandAugment ops (as `create_transform(..., auto_augment='rand-m9-mstd0.5-inc1',
    interpolation=...)` configures them: ImageNet-mean fill, the transform's interpolation for the geometric
    ops) on the same image at fixed magnitudes and signs: identical pixels."""
    import random

    import timm.data.auto_augment as aa  # after the fixture's torchvision work-around

    size = 64
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    hparams = dict(translate_const=int(size * 0.45), img_mean=tuple(min(255, round(255 * x))
                                                                    for x in transforms.IMAGENET_MEAN),
                   interpolation=aa.str_to_pil_interp(interpolation) if hasattr(aa, "str_to_pil_interp")
                   else {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interpolation])
    resample = transforms._RESAMPLE[interpolation]
    assert sorted(transforms.RAND_OPS) == sorted(aa._RAND_INCREASING_TRANSFORMS)
    for name in aa._RAND_INCREASING_TRANSFORMS:
        for magnitude in (0.0, 3.7, 9.0, 10.0):
            if name == "PosterizeIncreasing" and magnitude == 10.0:
                continue  # timm asks Pillow for 0 bits there, which Pillow >= 13 rejects (ours keeps 1)
            for negate in (False, True):
                monkeypatch.setattr(aa, "_randomly_negate", lambda v, negate=negate: -v if negate else v)
                op = aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
                random.seed(0)
                want = np.asarray(op(img))
                got = np.asarray(transforms.RAND_OPS[name](img, magnitude, _FixedSign(0.2 if negate else 0.8),
                                                           resample))
                np.testing.assert_array_equal(got, want, err_msg=f"{name} m={magnitude} negate={negate}")


def test_every_randaugment_op_keeps_size_and_mode_of_grayscale_images():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8), "L")
    for name, op in transforms.RAND_OPS.items():
        out = op(img, 9.0, np.random.default_rng(1), Image.BICUBIC)
        assert out.size == img.size and out.mode == img.mode, name


def test_random_erasing():
    x = np.zeros((16, 16, 3), np.float32)
    erased = transforms.random_erase(x, np.random.default_rng(0), prob=1.0)
    assert (erased != 0).any() and (erased == 0).any()
    assert (transforms.random_erase(x, np.random.default_rng(0), prob=0.0) == 0).all()


def test_loader_from_config_applies_the_digits_transform():
    c = base_config()
    loader = data.make_loader(c, "test", train=False, batch_size=150)
    batch = next(loader.epoch(0))
    assert batch["images"].shape == (150, 16, 16, 3) and batch["images"].dtype == np.uint8
    assert batch["images"].nbytes == 150 * 16 * 16 * 3  # one byte per pixel leaves the host
    assert isinstance(c.data, ml_collections.ConfigDict)


def test_subset_source_relabels_and_draws_shots():
    from learngene_jax.data.sources import SubsetSource

    labels = np.repeat(np.arange(5), 10)
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    base = ArraySource(images, labels, 5)
    task = SubsetSource(base, [3, 1], shots=4, seed=7)
    assert (len(task), task.num_classes) == (8, 2)
    imgs, lab = task.get(range(8))
    ids = np.asarray([im[0, 0, 0] for im in imgs])
    assert list(lab) == [0] * 4 + [1] * 4
    assert set(ids[:4]) <= set(range(30, 40)) and set(ids[4:]) <= set(range(10, 20))
    again = SubsetSource(base, [3, 1], shots=4, seed=7).get(range(8))[0]
    assert [im[0, 0, 0] for im in again] == list(ids)
    other = SubsetSource(base, [3, 1], shots=4, seed=8).get(range(8))[0]
    assert [im[0, 0, 0] for im in other] != list(ids)
    assert len(SubsetSource(base, [0, 2, 4])) == 30
    with pytest.raises(DataError, match="fewer than 11 shots"):
        SubsetSource(base, [0], shots=11)
    with pytest.raises(DataError, match="must be distinct ids in 0..4"):
        SubsetSource(base, [0, 9])


@pytest.mark.parametrize("workers", [0, 1])
def test_an_undecodable_image_is_one_clear_error_also_from_a_worker_process(tmp_path, workers):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((9, 9, 3), 40 * i, np.uint8)).save(tmp_path / "train" / cls / f"{i}.jpg")
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    c = base_config()
    c.data.update(dict(name="folder", path=str(tmp_path), image_size=8, workers=workers))
    loader = data.make_loader(c, "train", train=False, batch_size=7)
    with pytest.raises(DataError, match=r"cannot decode image .*broken\.jpg .*delete or replace the file"):
        list(loader.epoch(0))
    loader.close()


def _npz(tmp_path, name="u.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def test_npz_images_in_other_ranges_and_layouts_become_the_same_pixels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    want = npz_source(_npz(tmp_path, train_images=pixels, train_labels=labels), "train").get(range(6))[0]
    variants = {"float01": pixels.astype(np.float32) / 255, "float255": pixels.astype(np.float64),
                "nchw": pixels.transpose(0, 3, 1, 2), "nchw_float01": pixels.transpose(0, 3, 1, 2) / 255.0,
                "int64": pixels.astype(np.int64)}
    for name, images in variants.items():
        got = npz_source(_npz(tmp_path, f"{name}.npz", train_images=images, train_labels=labels.astype(np.float32)),
                         "train").get(range(6))[0]
        np.testing.assert_array_equal(np.stack(got), np.stack(want), err_msg=name)
    err = capsys.readouterr().err
    assert "float images within [0, 1]: scaled by 255" in err and "look channels-first" in err


@pytest.mark.parametrize("images,labels,message", [
    (np.full((4, 5, 5, 3), -0.5, np.float32), [0, 1, 0, 1], "look normalised already"),
    (np.full((4, 5, 5, 3), 300.0), [0, 1, 0, 1], "go up to 300"),
    (np.full((4, 5, 5, 7), 3, np.uint8), [0, 1, 0, 1], "have 7 channels"),
    (np.zeros((4, 5, 5, 3), np.uint8), [0.0, 1.5, 0.0, 1.0], "not whole numbers"),
    (np.zeros((4, 5, 5, 3), np.uint8), [0, 1, 0, 255], "ids [2, 3, 4, 5, 6, 7, 8, 9] …"),
    (np.zeros((4, 5, 5, 3), np.uint8), np.eye(4, 2), "one-hot labels"),
])
def test_npz_arrays_that_cannot_be_read_unambiguously_are_one_line(tmp_path, images, labels, message):
    path = _npz(tmp_path, train_images=images, train_labels=np.asarray(labels))
    with pytest.raises(DataError, match=re.escape(message)):
        npz_source(path, "train")


def test_damaged_or_foreign_npz_files_are_one_line(tmp_path):
    path = _npz(tmp_path, train_images=np.zeros((40, 8, 8, 3), np.uint8), train_labels=np.zeros(40, np.int64))
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"cannot read .*cut.npz as .npz .*save it again with np.savez"):
        npz_source(tmp_path / "cut.npz", "train")
    np.save(tmp_path / "one.npy", np.zeros((2, 3)))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError, match="holds one array, not an .npz archive"):
        npz_source(tmp_path / "one.npz", "train")
