"""scikit-learn's handwritten digits (1,797 real 8×8 images, shipped inside scikit-learn) as a tfds dataset,
so the offline demo reads it through the same `tfds.data_source` path as any other dataset.

Split (fixed, documented): stratified `train_test_split` with test_size=450 and random_state=0 →
1,347 train / 450 test. Pixel values 0..16 are scaled to uint8 0..255; images are 8×8×1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

NAME = "digits"
TEST_SIZE = 450
SPLIT_SEED = 0


def digits_split() -> dict[str, np.ndarray]:
    """Indices into `load_digits()` of the train and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=TEST_SIZE, stratify=target,
                                   random_state=SPLIT_SEED)
    return {"train": np.sort(train), "test": np.sort(test)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """tfds builder over sklearn.datasets.load_digits (no download)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "`index` feature: the example's position in load_digits()"}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn handwritten digits, 8x8 grayscale, 10 classes",
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                 "label": tfds.features.ClassLabel(num_classes=10),
                                                 "index": tfds.features.Scalar(np.int64)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(idx) for split, idx in digits_split().items()}

    def _generate_examples(self, indices):
        from PIL import Image
        from sklearn.datasets import load_digits

        data = load_digits()
        images = np.round(data.images * (255 / 16)).astype(np.uint8)
        for i in indices:
            # PIL images, not arrays: tfds encodes arrays through TensorFlow, which is not installed.
            yield int(i), {"image": Image.fromarray(images[i]), "label": int(data.target[i]), "index": int(i)}


def prepare(data_dir: str | Path) -> Path:
    """Build the dataset into `data_dir` (array_record, ~1.5 s) unless it is already there."""
    builder = Digits(data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    return Path(data_dir)
