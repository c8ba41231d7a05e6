"""Text data: the user's columns as text / text_pair / label, tokenized once without padding.

`tokenize_splits` gives token ids (no padding: `DataCollatorWithPadding` pads each batch to its longest text) and a
`length` column the length-grouped batches use.
"""

from __future__ import annotations

import warnings

from engine.data import NUMBER_TYPES, dtype
from engine.errors import DataError


TEXT_NAMES = ("text", "sentence", "review", "content", "document")  # an empty text_column reads the first present
LABEL_NAMES = ("label", "labels")


def _guess(columns: list[str], features, preferred: tuple[str, ...]) -> str | None:
    for name in preferred:
        if name in columns:
            return name
    for name in columns:  # first string column
        if getattr(features.get(name), "dtype", None) in ("string", "large_string"):
            return name
    return None


def label_column(cfg, ds) -> str | None:
    """The label column: label_column, else 'label' or 'labels'."""
    return cfg.label_column or next((c for c in LABEL_NAMES if c in ds.column_names), None)


def standardize(ds, cfg, field: str):
    """Rename the user's columns to text / text_pair / label and drop the rest; refuse what cannot train a text
    classifier (missing columns, the same column as text and label, numbers as the text, empty labels)."""
    import datasets

    cols = list(ds.column_names)
    if cfg.image_column or any(isinstance(f, datasets.Image) for f in ds.features.values()):
        raise DataError(f"model_name_or_path: '{cfg.model_name_or_path}' is a text model and {field} holds images; "
                        "use mlp or vit-tiny (from scratch) or an image classifier")
    label = label_column(cfg, ds)
    # never guess the label column as the text: a file of ids and labels has no text to learn from
    text = cfg.text_column or _guess([c for c in cols if c != label], ds.features,
                                     TEXT_NAMES)
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
    _check_text(ds, text, label, field)
    keep = {text: "text", label: "label"}
    if cfg.text_pair_column:
        keep[cfg.text_pair_column] = "text_pair"
    ds = ds.select_columns(list(keep))
    ds = ds.rename_columns({k: v for k, v in keep.items() if k != v})
    labels = ds["label"]
    missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)
               or (isinstance(v, str) and not v.strip())]
    if missing and _multi_label(cfg, ds):  # an empty cell is an example with no labels
        ds = ds.map(lambda b: {"label": ["" if v is None or v != v else v for v in b["label"]]}, batched=True)
    elif missing:
        raise DataError(f"label_column: {len(missing)} empty/NaN labels in {field} (first at row {missing[0] + 1});"
                        " fill them in or drop those rows")
    for col in ("text", "text_pair"):
        if col in ds.column_names and any(v is None for v in ds[col]):
            ds = ds.map(lambda b: {col: ["" if v is None else str(v) for v in b[col]]}, batched=True)
    return ds


def _multi_label(cfg, ds) -> bool:
    from engine.tasks.heads import MultiLabel, _is_list_feature

    return bool(cfg.label_separator) or cfg.problem_type == MultiLabel.problem_type or \
        _is_list_feature(ds.features["label"])


def _check_text(ds, text: str, label: str, field: str) -> None:
    """Refuse column choices that cannot train on text, each with one line naming the fix: the same column as
    text and label, a text column of numbers."""
    if text == label:
        raise DataError(f"label_column: '{label}' is also the text column; the label column must hold the classes "
                        "(e.g. 'label', 'category'): choose another column for one of them")
    if dtype(ds, text).startswith(NUMBER_TYPES):
        raise DataError(f"text_column: column '{text}' of {field} holds numbers ({dtype(ds, text)}), not text; "
                        "choose the column with the text")


def tokenize_splits(splits, tokenizer, max_seq_length: int) -> dict:
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
        ds = ds.map(encode, batched=True, desc=f"tokenizing {name}", new_fingerprint=_fingerprint(ds, tokenizer,
                                                                                                    max_seq_length))
        if name != "train":
            with warnings.catch_warnings():  # pyarrow deprecation noise from inside datasets' sort
                warnings.simplefilter("ignore", FutureWarning)
                ds = ds.sort("length", reverse=True)
        out[name] = ds
    return out


def _fingerprint(ds, tokenizer, max_seq_length: int) -> str | None:
    """The tokenized split's `datasets` fingerprint, for a split held in memory (bundled sets and data files): without
    one, `map` hashes `encode` with the tokenizer inside it by pickling the whole vocabulary, ~0.7 s of every run's
    start. A split read from `datasets`' disk cache (Hub datasets) keeps datasets' own hash (None), since there the
    fingerprint names the cache file the result is written to and must cover the tokenizer's contents."""
    if ds.cache_files:
        return None
    from datasets.fingerprint import Hasher

    return Hasher.hash([ds._fingerprint, "hubtune tokenize", type(tokenizer).__name__, tokenizer.name_or_path,
                        len(tokenizer), max_seq_length])


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "label")


def model_view(ds):
    """Only the columns the model and collator need (texts stay in the dataset for error analysis)."""
    return ds.select_columns([c for c in MODEL_INPUTS if c in ds.column_names])
