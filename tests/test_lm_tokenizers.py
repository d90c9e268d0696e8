"""Tokenizers as users bring them (issue 25, items 2, 4, 5), through the command line: embedding tables padded past
the tokenizer (fine-tuning, LoRA, a teacher distilled over the shared vocabulary), tokenizer files whose truncation,
padding and BOS/EOS templates must not change a corpus, and tfds text datasets split by slicing."""

import json
import shutil

import jax
import numpy as np
from conftest import run_module

from learngene_jax.data import tokenize
from learngene_jax.models.io import save_model
from learngene_jax.models.llama import Llama

DOCS = {"a.txt": "The cat sat on the mat. <s> is literal text here. " * 12,
        "b.txt": "Dogs bark at night; the moon is bright. " * 12,
        "c.txt": "Birds sing in the morning and fly away. " * 12}
SMOKE = "--config=configs/lm_hf_teacher.py:stage=scratch,smoke=True"


def _corpus(tmp_path, vocab=300, special=()):
    """A folder of .txt documents and a byte-level BPE tokenizer.json of `vocab` tokens trained on them."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    tok = tokenize.train_bpe((t.encode() for t in DOCS.values()), vocab - len(special)).tokenizer
    tok.add_special_tokens(list(special))
    path = tmp_path / "tokenizer.json"
    path.write_text(tok.to_str())
    return folder, path


def _llama(vocab, seed=0):
    model = Llama(vocab_size=vocab, width=32, depth=2, num_heads=2, num_kv_heads=1, mlp_dim=32, rope_theta=10_000.0,
                  eps=1e-5, max_positions=64)
    return model, model.init(jax.random.key(seed), np.zeros((1, 8), np.int32))


def _train(tmp_path, folder, tok, *changes, check=True):
    return run_module("learngene_jax.main", SMOKE, f"--workdir={tmp_path}", "--config.data.name=folder_text",
                      f"--config.data.path={folder}", f"--config.data.tokenizer={tok}", "--config.data.eval_windows=4",
                      *changes, check=check)


def test_padded_embedding_tables_fine_tune_adapt_and_teach_over_the_shared_vocabulary(tmp_path):
    from learngene_jax.convert.hf import to_hf

    folder, tok = _corpus(tmp_path)
    student_dir = save_model(tmp_path / "student", *_llama(320))  # padded to a multiple of 64 (nanoGPT style)
    teacher_dir = to_hf(*_llama(384, seed=1), tmp_path / "teacher")  # a Hugging Face teacher padded to 128
    shutil.copy(tok, teacher_dir / "tokenizer.json")  # ... that ships the data's tokenizer
    proc = _train(tmp_path / "kd", folder, tok, f"--config.init={student_dir}",
                  f"--config.distill.teacher_init={teacher_dir}", "--config.distill.type=soft")
    assert "first 300 logits" in proc.stderr
    metrics = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["kd"]) for m in metrics if "kd" in m) and any("kd" in m for m in metrics)
    proc = _train(tmp_path / "lora", folder, tok, f"--config.init={student_dir}", "--config.lora.rank=2")
    assert np.isfinite(json.loads((tmp_path / "lora" / "final.json").read_text())["loss"])


def test_a_tokenizer_bigger_than_the_model_or_another_teacher_tokenizer_is_one_line(tmp_path):
    from learngene_jax.convert.hf import to_hf

    folder, tok = _corpus(tmp_path)
    small = save_model(tmp_path / "small", *_llama(280))
    proc = _train(tmp_path / "small_run", folder, tok, f"--config.init={small}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr[-2000:]
    assert "300" in proc.stderr and "280" in proc.stderr and "Traceback" not in proc.stderr
    other_dir = to_hf(*_llama(300, seed=1), tmp_path / "other")  # same table size, another tokenizer
    (other_dir / "tokenizer.json").write_text(tokenize.train_bpe(
        [b"completely different text with other merges " * 40], 300).tokenizer.to_str())
    proc = _train(tmp_path / "other_run", folder, tok, f"--config.distill.teacher_init={other_dir}",
                  "--config.distill.type=soft", check=False)
    assert proc.returncode == 2 and "tokenizer" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr


def test_tokenizer_files_do_not_truncate_pad_or_drop_their_template(tmp_path):
    from tokenizers import processors

    folder, tok_path = _corpus(tmp_path, special=("<s>", "</s>", "<pad>"))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    tok.encode_special_tokens = True  # the literal "<s>" in a.txt is text
    plain = {n: tok.encode(t, add_special_tokens=False).ids for n, t in DOCS.items()}
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.enable_truncation(max_length=8)
    tok.enable_padding(length=16, pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    hf_dir = tmp_path / "hf_tok"
    hf_dir.mkdir()
    tok.encode_special_tokens = False
    tok.save(str(hf_dir / "tokenizer.json"))
    proc = run_module("learngene_jax.tokenize_corpus", "--corpus", "folder_text", "--path", str(folder), "--tokenizer",
                      str(hf_dir), "--out", str(tmp_path / "tokens"))
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert any("truncation" in n and "padding" in n for n in notes), proc.stderr
    assert any("<s>" in n and "per document" in n for n in notes), proc.stderr
    assert any("special tokens" in n and "<s>" in n for n in notes), proc.stderr
    train = np.load(tmp_path / "tokens" / "train.npy")  # a.txt, b.txt (c.txt is held out)
    # whole documents, the template's BOS before each and an EOS after each (issue 27: with no tokenizer_config.json
    # beside it, the first special token of KNOWN_EOS: the trained BPE's <|endoftext|>), the literal "<s>" in a.txt
    # encoded as text
    eos = tok.token_to_id(tokenize.EOT)
    expected = [bos, *plain["a.txt"], eos, bos, *plain["b.txt"], eos]
    assert bos not in plain["a.txt"] and "<s>" in DOCS["a.txt"]
    np.testing.assert_array_equal(train, expected)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": True,
                                                              "bos_token": "<s>", "eos_token": "</s>"}))
    proc = run_module("learngene_jax.tokenize_corpus", "--corpus", "folder_text", "--path", str(folder), "--tokenizer",
                      str(hf_dir), "--out", str(tmp_path / "tokens2"), check=False)
    assert proc.returncode == 2 and "add_eos_token" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]


def test_a_tfds_text_dataset_with_only_a_train_split_is_sliced(tmp_path):
    import tensorflow_datasets as tfds

    texts = [f"story number {i} about a cat and a dog. " * 10 for i in range(10)]

    class OnlyTrain(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, t in enumerate(texts):
                yield i, {"text": t}

    OnlyTrain(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    proc = run_module("learngene_jax.tokenize_corpus", "--corpus", "tfds_text", "--path", "only_train", "--data-dir",
                      str(tmp_path), "--splits", "train[:80%]", "train[80%:]", "--out", str(tmp_path / "tokens"))
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert (meta["train"]["documents"], meta["validation"]["documents"]) == (8, 2), proc.stderr
    bad = run_module("learngene_jax.tokenize_corpus", "--corpus", "tfds_text", "--path", "only_train", "--data-dir",
                     str(tmp_path), "--splits", "train", "validation", "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and "train[:80%]" in bad.stderr.splitlines()[-1], bad.stderr[-2000:]
