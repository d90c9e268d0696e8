"""Users' files as they are (issue 25, items 6, 7 and 10): text files in any encoding with a byte-order mark and
any case of .txt, every Pillow image mode in image folders and in `predict`, empty token rows, and `checkpoint.keep`
after a half-written checkpoint — each through the command users run."""

import codecs
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_module
from helpers import tiny_gene
from PIL import Image

from learngene_jax import genes
from learngene_jax.data.images import to_rgb
from learngene_jax.data.sources import FolderSource
from learngene_jax.errors import DataError
from learngene_jax.genes.io import load_gene, save_gene

TEXTS = {"a.TXT": "plain UTF-8 — café\n", "b.txt": "UTF-16 with a mark: naïve ☃\n",
         "c.txt": "UTF-32 with a mark: 𝄞 clef\n", "d.txt": "UTF-8 with a mark: Übung\n", "z.txt": "held out\n"}


def _tokenize(tmp_path, corpus):
    return run_module("learngene_jax.tokenize_corpus", "--corpus", "folder_text", "--path", str(corpus), "--out",
                      str(tmp_path / "tokens"), check=False)


# -- text files -----------------------------------------------------------------------------------------------
def test_text_files_with_a_byte_order_mark_are_decoded_and_said(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    encoded = {"a.TXT": TEXTS["a.TXT"].encode(), "b.txt": codecs.BOM_UTF16_LE + TEXTS["b.txt"].encode("utf-16-le"),
               "c.txt": codecs.BOM_UTF32_BE + TEXTS["c.txt"].encode("utf-32-be"),
               "d.txt": codecs.BOM_UTF8 + TEXTS["d.txt"].encode(), "z.txt": TEXTS["z.txt"].encode(), "e.txt": b""}
    for name, data in encoded.items():
        (corpus / name).write_bytes(data)
    proc = _tokenize(tmp_path, corpus)
    assert proc.returncode == 0, proc.stderr
    train = np.load(tmp_path / "tokens" / "train.npy").tobytes()
    assert train == b"\n\n".join(TEXTS[n].encode() for n in ("a.TXT", "b.txt", "c.txt", "d.txt"))
    assert np.load(tmp_path / "tokens" / "validation.npy").tobytes() == TEXTS["z.txt"].encode()
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    for said in ("1 UTF-16 LE with a byte-order mark file(s) as UTF-8: b.txt",
                 "1 UTF-32 BE with a byte-order mark file(s) as UTF-8: c.txt",
                 "1 UTF-8 with a byte-order mark file(s) as UTF-8: d.txt", "skipped 1 empty file(s): e.txt"):
        assert sum(said in line for line in notes) == 1, (said, notes)


@pytest.mark.parametrize("data,found,fix", [
    ("déjà vu".encode("cp1252"), "is not UTF-8 (byte 0xe9 at 1; cp1252 or Latin-1?)", "iconv -f CP1252 -t UTF-8"),
    ("no mark".encode("utf-16-le"), "holds NUL bytes (first at byte 1): UTF-16LE without a byte-order mark?",
     "iconv -f UTF-16LE -t UTF-8"),
    ("no mark".encode("utf-16-be"), "holds NUL bytes (first at byte 0): UTF-16BE without a byte-order mark?",
     "iconv -f UTF-16BE -t UTF-8"),
    ("no mark".encode("utf-32-le"), "holds NUL bytes (first at byte 1): UTF-32LE without a byte-order mark?",
     "iconv -f UTF-32LE -t UTF-8"),
    (codecs.BOM_UTF16_LE + b"\x00\xd8", "starts with a UTF-16 LE byte-order mark but is not UTF-16 LE",
     "save it again as UTF-8"),
])
def test_text_files_in_other_encodings_are_refused_by_name(tmp_path, data, found, fix):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("fine\n")
    (corpus / "bad.txt").write_bytes(data)
    proc = _tokenize(tmp_path, corpus)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {corpus / 'bad.txt'} {found}") and fix in line, line
    assert not (tmp_path / "tokens" / "train.npy").exists()


# -- image files ----------------------------------------------------------------------------------------------
RGB = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)  # (height, width, channels)
GRAY = RGB[..., 0]


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _save_every_mode(folder):
    """One file per mode in `folder`; returns {file name: the uint8 (H, W, 3) image the loader must give}."""
    folder.mkdir(parents=True)
    gray3 = np.repeat(GRAY[..., None], 3, -1)
    Image.fromarray(RGB).save(folder / "rgb.PNG")
    Image.fromarray(GRAY.astype(np.uint16) * 257 + 100).save(folder / "sixteen.png")  # I;16: 100/257 rounds away
    Image.fromarray((GRAY.astype(np.uint16) * 257).astype(">u2")).save(folder / "sixteen_big_endian.tif")
    Image.fromarray(GRAY.astype(np.float32) / 255).save(folder / "float.tiff")
    Image.fromarray(np.dstack([RGB, np.full(GRAY.shape, 7, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(np.dstack([GRAY, GRAY // 2])).save(folder / "la.png")
    Image.fromarray(GRAY > 127).save(folder / "bit.png")
    palette = Image.fromarray((GRAY % 3).astype(np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(folder / "palette.png")
    palette.save(folder / "palette_transparent.png", transparency=0)
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)  # red in CMYK
    # stored turned on its side, with EXIF orientation 6 ("rotate 90° clockwise to view")
    Image.fromarray(RGB).transpose(Image.Transpose.ROTATE_90).save(folder / "exif.png", exif=_exif(6))
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)[GRAY % 3]
    return {"rgb.PNG": RGB, "sixteen.png": gray3, "sixteen_big_endian.tif": gray3, "float.tiff": gray3, "rgba.png": RGB,
            "la.png": gray3, "bit.png": np.repeat(np.where(GRAY > 127, 255, 0).astype(np.uint8)[..., None], 3, -1),
            "palette.png": colours, "palette_transparent.png": colours,
            "cmyk.jpg": np.broadcast_to(np.array([255, 0, 0], np.uint8), (3, 4, 3)), "exif.png": RGB}


def test_every_image_mode_of_an_image_folder_is_the_right_8_bit_rgb(tmp_path):
    expected = _save_every_mode(tmp_path / "train" / "all")
    source = FolderSource(tmp_path, "train")
    assert len(source) == len(expected)  # .PNG, .tif and .tiff are read too
    images, _ = source.get(range(len(source)))
    for (path, _), image in zip(source._files, images, strict=True):
        want = expected[path.name]
        assert image.dtype == np.uint8 and image.shape == want.shape, path.name
        np.testing.assert_allclose(image.astype(int), want.astype(int), atol=2 if path.suffix == ".jpg" else 0,
                                   err_msg=path.name)


@pytest.mark.parametrize("image,message", [
    (Image.fromarray(np.full((2, 2), 300.0, np.float32)), "holds 32-bit float pixels in 300..300: only floats in"),
    (Image.fromarray(np.full((2, 2), 70000, np.int32)), "holds 32-bit integer pixels (Pillow mode I) of unknown"),
])
def test_image_modes_of_unknown_range_are_refused_by_name(tmp_path, image, message):
    image.save(tmp_path / "x.tif")
    with Image.open(tmp_path / "x.tif") as im, pytest.raises(DataError, match="x.tif " + message.replace("(", r"\(")
                                                                 .replace(")", r"\)")):
        to_rgb(im, str(tmp_path / "x.tif"))


def test_ycbcr_and_other_colour_modes_use_pillows_conversion():
    for mode in ("YCbCr", "HSV", "LAB", "RGBX"):
        im = Image.fromarray(RGB).convert(mode)
        np.testing.assert_array_equal(to_rgb(im, mode), np.asarray(im.convert("RGB")))


def _predict(tmp_path, images, *extra):
    if not (tmp_path / "g").exists():
        save_gene(tmp_path / "g", tiny_gene("tleg")[2])  # aux model of 32×32 inputs
    return run_module("learngene_jax.predict", "--gene", str(tmp_path / "g"), "--images", str(images),
                      "--out", str(tmp_path / "y.npy"), *extra, check=False)


def test_predict_reads_image_files_as_training_does(tmp_path):
    """A folder of image files: the upright image, the same stored sideways with EXIF orientation 6, the same as
    16-bit and with an alpha channel give the logits of the normalised upright pixels passed as .npy."""
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gray = rgb[..., 1]
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a_upright.png")
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90).save(folder / "b_exif.png", exif=_exif(6))
    Image.fromarray(np.dstack([rgb, np.zeros_like(gray)])).save(folder / "c_alpha.PNG")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "d_sixteen.png")
    (folder / "notes.txt").write_text("not an image")
    proc = _predict(tmp_path, folder, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
    assert proc.returncode == 0, proc.stderr
    logits = np.load(tmp_path / "y.npy")
    pixels = np.stack([rgb, rgb, rgb, np.repeat(gray[..., None], 3, -1)])
    gene = load_gene(tmp_path / "g")
    want = genes.aux_model(gene.meta).apply({"params": genes.aux_params(gene)},
                                            jnp.asarray((pixels / 255.0 - 0.5) / 0.25, jnp.float32), train=False)
    np.testing.assert_allclose(logits, np.asarray(want), rtol=0, atol=1e-5)
    assert "alpha dropped" in proc.stderr and "16-bit images" in proc.stderr


@pytest.mark.parametrize("make,extra,message", [
    (lambda p: Image.fromarray(np.full((32, 32), 2.0, np.float32)).save(p / "f.tif"), ("--mean", "0,0,0", "--std",
     "1,1,1"), "f.tif holds 32-bit float pixels in 2..2"),
    (lambda p: Image.new("RGB", (32, 32)).save(p / "f.png"), (), "pass --mean and --std"),
    (lambda p: Image.new("RGB", (32, 32)).save(p / "f.png"), ("--mean", "127,127,127", "--std", "64,64,64"),
     "fractions of the 0-255 range"),
])
def test_predict_refuses_image_files_by_name(tmp_path, make, extra, message):
    (tmp_path / "photos").mkdir()
    make(tmp_path / "photos")
    proc = _predict(tmp_path, tmp_path / "photos", *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


# -- small edges ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 0), (0, 4)])
def test_predict_on_empty_token_rows_is_one_line(tmp_path, shape):
    from learngene_jax.models import create_model
    from learngene_jax.models.io import save_model

    model = create_model("llama", vocab_size=32, width=16, depth=1, num_heads=2, num_kv_heads=2, mlp_dim=32,
                         max_positions=16)
    save_model(tmp_path / "m", model, model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    np.save(tmp_path / "t.npy", np.zeros(shape, np.int32))
    proc = run_module("learngene_jax.predict", "--model-dir", str(tmp_path / "m"), "--tokens", str(tmp_path / "t.npy"),
                      "--out", str(tmp_path / "y.npy"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 't.npy'}: holds no tokens (shape {shape}); "
                                                f"predict needs at least one row of at least one token"]


def test_keep_holds_after_a_half_written_checkpoint_on_an_image_folder_of_every_mode(tmp_path):
    """Training on a folder of every image mode; a save cut short at step 3 (a preemption save, killed while
    writing) is skipped on resume, and afterwards only `checkpoint.keep` checkpoints remain."""
    for cls in ("a", "b"):
        _save_every_mode(tmp_path / "data" / "train" / cls)
    work = tmp_path / "w"
    args = ["--config=configs/digits_vit.py:depth=1", f"--workdir={work}", "--config.model.width=16",
            "--config.model.num_heads=1", "--config.data.name=folder", f"--config.data.path={tmp_path / 'data'}",
            "--config.data.eval_split=train", "--config.data.image_size=8", "--config.batch_size=11",
            "--config.eval_batch_size=22", "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=1"]
    first = run_module("learngene_jax.main", *args, "--config.epochs=1")
    assert first.stderr.count("alpha dropped") == 1  # said once
    ckpts = work / "checkpoints"
    [kept] = [p.name for p in ckpts.iterdir()]
    assert kept == "2"  # 22 images, batch 11: 2 steps an epoch
    shutil.copytree(ckpts / kept, ckpts / f"{int(kept) + 1}.orbax-checkpoint-tmp-1700000000")
    run_module("learngene_jax.main", *args, "--config.epochs=2")
    assert [p.name for p in ckpts.iterdir()] == [str(2 * int(kept))]
