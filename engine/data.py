"""Task-agnostic data loading: data files and their column types, Hub datasets, the bundled catalogue, label
encoding and splits, and the length-grouped batches training draws from them (resumable at any sample).

Each task (engine/tasks/) reads its sources with these helpers and standardizes their columns; `make_splits` then
encodes the labels (through the task's head: classes, label sets or numbers) and splits off a validation set.
Problems raise `DataError` with one line that names the field and the fix.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.bundled import BUNDLED, IMAGE_SETS, is_bundled  # noqa: F401 - the catalogue, re-exported
from engine.errors import ConfigError, DataError

DATA_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
NUMBER_TYPES = ("int", "uint", "float", "bool", "double", "decimal")

# an upload is stored as runs/uploads/<YYYYmmdd-HHMMSS>-<name> (engine.runs.jobs.save_upload)
UPLOAD_STAMP = re.compile(r"^\d{8}-\d{6}-")


def given_name(path) -> str:
    """The name a user knows a data file by: a stored upload's name without its time stamp."""
    return UPLOAD_STAMP.sub("", Path(str(path)).name)


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
    encoded (engine/tasks/heads/: a class index, a vector of label flags, or a number)."""

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
    """Encode every split's labels with `head` (engine/tasks/heads/), hold out a validation split when none is
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


def columns(path: str) -> dict[str, str]:
    """{column name: 'text' | 'number' | 'list' | other type} of a data file, in file order (for the column
    pickers: only text columns are offered as the text)."""
    out = {}
    for name, feature in read_file(path).features.items():
        dtype = str(getattr(feature, "dtype", "") or "")
        if dtype in ("string", "large_string"):
            out[name] = "text"
        elif dtype.startswith(NUMBER_TYPES):
            out[name] = "number"
        elif type(feature).__name__ in ("List", "Sequence", "LargeList"):
            out[name] = "list"
        else:
            out[name] = type(feature).__name__.lower()
    return out


class LengthGroupedBatchSampler:
    """Random batches of similar-length examples, reproducible from (seed, epoch).

    Each epoch: shuffle, cut into mega-batches of `mega * batch_size`, sort each by length, cut into batches, then
    shuffle the order of the batches. Padding waste falls from ~50% to a few % on varied texts. With
    `group=False` the batches are plain random batches. Its own generator leaves the global RNG untouched, so a
    resumed run sees the same batches as an uninterrupted one.

    Under DDP, Accelerate deals batch k to rank k % world. The batches are shuffled in runs of `world` neighbours
    from the same sorted mega-batch, so the ranks of one step get batches of similar length and none waits long
    for the others at the gradient all-reduce. With one process the order is the plain shuffle.

    `batch_size` is None on purpose: the last batch of each mega-batch is short, and Accelerate's DDP shard, given
    a batch size, reads a short batch as the end of the data and dropped the batches of its step (a fifth of an
    epoch's samples on some seeds). `resume_at` continues an epoch after a number of global samples, in the order
    drawn for the world size that started it, dealt to however many processes run now.
    """

    batch_size = None

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: bool = True, mega: int = 50,
                 world: int = 1):
        self.lengths, self.size, self.seed, self.world = lengths, batch_size, seed, max(1, world)
        self.mega = mega * batch_size if group else batch_size
        self.drop_last = False
        self.epoch = 0
        self._resume: tuple[int, int, int] | None = None  # (epoch, samples already consumed, its order's world)
        self._cache: tuple | None = None  # ((epoch, resume), batches still to come, samples before them)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, samples: int, world: int) -> None:
        """Epoch `epoch` continues after its first `samples` global samples, in the order drawn for `world`."""
        self._resume = (epoch, samples, max(1, world or self.world)) if samples else None

    def order_world(self) -> int:
        """The world size the current epoch's batch order was drawn for."""
        r = self._resume
        return r[2] if r and r[0] == self.epoch else self.world

    def _order(self, world: int) -> list[list[int]]:
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        batches = []
        for start in range(0, len(perm), self.mega):
            group = sorted(perm[start:start + self.mega], key=lambda i: -self.lengths[i])
            batches += [group[i:i + self.size] for i in range(0, len(group), self.size)]
        steps = [batches[i:i + world] for i in range(0, len(batches), world)]
        tail = steps.pop() if steps and len(steps[-1]) < world else []  # a short last step stays last: ranks aligned
        order = torch.randperm(len(steps), generator=g).tolist()
        return [b for i in order for b in steps[i]] + tail

    def _remaining(self) -> tuple[list[list[int]], int]:
        key = (self.epoch, self._resume)
        if self._cache is None or self._cache[0] != key:
            order, start, done = self._order(self.order_world()), 0, 0
            if self._resume and self._resume[0] == self.epoch:
                while start < len(order) and done < self._resume[1]:
                    done, start = done + len(order[start]), start + 1
                if done != self._resume[1]:
                    raise ConfigError(f"resume_from_checkpoint: the checkpoint stopped {self._resume[1]} samples into "
                                      f"epoch {self.epoch}, which is no batch boundary of this data; resume with the "
                                      "data, batch size and seed it was written with")
            self._cache = (key, order[start:], done)
        return self._cache[1], self._cache[2]

    def samples_done(self, batches_per_rank: int) -> int:
        """Global samples of this epoch consumed once every process has taken `batches_per_rank` batches."""
        batches, before = self._remaining()
        return before + sum(len(b) for b in batches[:batches_per_rank * self.world])

    def __iter__(self):
        return iter(self._remaining()[0])

    def __len__(self) -> int:
        return len(self._remaining()[0])
