"""Task-agnostic data loading: data files, Hub datasets, the bundled catalogue, label encoding and splits.

Each task (engine/tasks/) reads its sources with these helpers and standardizes their columns; `make_splits` then
encodes the labels (through the task's head: classes, label sets or numbers) and splits off a validation set.
Problems raise `DataError` with one line that names the field and the fix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from engine.bundled import BUNDLED, IMAGE_SETS, is_bundled  # noqa: F401 - the catalogue, re-exported
from engine.errors import DataError

DATA_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
NUMBER_TYPES = ("int", "uint", "float", "bool", "double", "decimal")

_TRANSFORMERS_LOCK = threading.Lock()
_transformers_ready = False


def settle_transformers() -> None:
    """Import the transformers names that other libraries reach for, once, under a lock.

    transformers resolves its names lazily on first access. In the web app two handlers may do that at once (a
    config parsed for the live preview while an upload is read), and `datasets`, which looks up
    `transformers.PreTrainedTokenizerBase` whenever transformers is loaded, then saw a half-resolved module
    ("module 'transformers' has no attribute 'PreTrainedTokenizerBase'"). Resolved here first, they are plain
    attributes for everyone after.
    """
    global _transformers_ready
    if _transformers_ready:
        return
    with _TRANSFORMERS_LOCK:
        if not _transformers_ready:
            import transformers

            transformers.PreTrainedTokenizerBase, transformers.HfArgumentParser  # noqa: B018 - resolves them
            _transformers_ready = True


@dataclass
class Splits:
    """Standardized splits (the task's columns plus `label`) and the label names; `head` says how labels are
    encoded (engine/tasks/heads.py: a class index, a vector of label flags, or a number)."""

    train: "object"
    validation: "object"
    test: "object | None"
    label_names: list[str]
    head: "object" = None

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


def cached_on_disk(cfg) -> bool:
    """Whether loading writes the `datasets` disk cache (Hub datasets); bundled sets and files load in memory."""
    return bool(cfg.dataset_name) and not is_bundled(cfg.dataset_name)


def load_bundled_text(cfg) -> dict:
    """{'train', 'validation', 'test'} of a bundled text set (columns text, label)."""
    import datasets

    if cfg.dataset_name not in BUNDLED or cfg.dataset_name in IMAGE_SETS:
        raise DataError(f"dataset_name: unknown bundled text dataset '{cfg.dataset_name}'; choose one of "
                        f"{', '.join(n for n in sorted(BUNDLED) if n not in IMAGE_SETS)}")
    return {"train": datasets.Dataset.from_dict(BUNDLED[cfg.dataset_name][0]()), "validation": None, "test": None}


def load_files(cfg) -> dict:
    """{'train', 'validation', 'test'} from train_file / validation_file / test_file."""
    return {
        "train": read_file(cfg.train_file, "train_file"),
        "validation": read_file(cfg.validation_file, "validation_file") if cfg.validation_file else None,
        "test": read_file(cfg.test_file, "test_file") if cfg.test_file else None,
    }


def load_hub(cfg) -> dict:
    """{'train', 'validation', 'test'} of a Hub dataset (downloaded and cached by `datasets`)."""
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


def split_fields(cfg) -> dict[str, str]:
    """How messages name each split's source (a file, or the Hub dataset and split)."""
    return {"train": cfg.train_file or f"{cfg.dataset_name}[{cfg.train_split}]",
            "validation": cfg.validation_file or "validation data", "test": cfg.test_file or "test data"}


def dtype(ds, column: str) -> str:
    """The `datasets` value type of a column ('string', 'int64', ...; '' for lists and images)."""
    return str(getattr(ds.features.get(column), "dtype", "") or "")


def make_splits(cfg, parts: dict, fields: dict, head, column: str = "label") -> Splits:
    """Encode every split's labels with `head` (engine/tasks/heads.py), hold out a validation split when none is
    given (stratified where the head allows it), apply max_train_samples / max_eval_samples. `column` is the
    user's name of the label column, for messages."""
    settle_transformers()
    parts, names = head.encode(parts, cfg, fields, column)
    train = parts["train"]
    if parts["validation"] is None:
        size = cfg.validation_split_percentage / 100
        try:
            split = train.train_test_split(test_size=size, seed=cfg.seed,
                                           stratify_by_column="label" if head.stratify else None)
        except ValueError:  # a class too small to stratify: fall back to a plain random split
            split = train.train_test_split(test_size=size, seed=cfg.seed)
        train, parts["validation"] = split["train"], split["test"]
    if cfg.max_train_samples:
        train = train.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(train))))
    val = parts["validation"]
    if cfg.max_eval_samples:
        val = val.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(val))))
    for name, ds in (("train", train), ("validation", val)):
        if len(ds) == 0:
            raise DataError(f"{name} split is empty; provide more data or lower validation_split_percentage")
    return Splits(train=train, validation=val, test=parts["test"], label_names=names, head=head)


