"""Image datasets: bundled real digits, imagefolder folders and zips, Hub datasets with an image column.

Every source ends as `datasets.Dataset`s with columns `image` (datasets.Image), `label` (ClassLabel) and `text` (a
short description of each example - file name or index - shown in eval_predictions.jsonl), which engine.data then
encodes and splits like text data. The bundled image sets (MNIST, scikit-learn's digits) are in engine/bundled.py.

- imagefolder: a folder or .zip with one subfolder per class (optionally inside train/ validation/ test/), given as
  `train_file` or `dataset_name`. Zips are read in memory, never extracted; an entry with an absolute path or `..`
  is refused. Files that are not readable images are skipped and counted (logged with the first names); a folder
  with one class, or with no readable image, is refused.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path, PurePosixPath

from engine.bundled import BUNDLED, IMAGE_SETS
from engine.errors import DataError

log = logging.getLogger("hubtune")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
SPLIT_DIRS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
              "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
IGNORED = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
ARCHIVES = (".zip",)  # an uploaded image folder


def _is_folder_source(value: str | None) -> bool:
    return bool(value) and (Path(value).expanduser().is_dir() or str(value).lower().endswith(".zip"))


def is_image_source(cfg) -> bool:
    """True when the data is images by its name alone: a bundled image set, or an imagefolder folder / .zip."""
    return cfg.dataset_name in IMAGE_SETS or _is_folder_source(cfg.train_file) or _is_folder_source(cfg.dataset_name)


def load_raw(cfg) -> dict:
    """{'train', 'validation', 'test'} datasets (image, label, text) for a bundled image set, an imagefolder, or
    a Hub dataset with an image column."""
    if cfg.dataset_name in IMAGE_SETS:
        return BUNDLED[cfg.dataset_name][0]()
    if cfg.dataset_name and not _is_folder_source(cfg.dataset_name):
        from engine.data import load_hub

        return load_hub(cfg)
    field, source = ("train_file", cfg.train_file) if cfg.train_file else ("dataset_name", cfg.dataset_name)
    parts, skipped = read_imagefolder(source, field)
    if skipped:
        log.warning("%s: skipped %d file(s) that are not readable images (first: %s)", field, len(skipped),
                    ", ".join(skipped[:3]))
    for name, other in (("validation", cfg.validation_file), ("test", cfg.test_file)):
        if other and _is_folder_source(other):
            more, bad = read_imagefolder(other, f"{name}_file", names=parts["train"].features["label"].names,
                                         single=True)
            parts[name] = more["train"]
            if bad:
                log.warning("%s_file: skipped %d unreadable file(s) (first: %s)", name, len(bad), ", ".join(bad[:3]))
    return parts


# ------------------------------------------------------------------------------------------------------------
# imagefolder: a directory or zip, one subfolder per class


def _safe_member(name: str, source: str, field: str) -> PurePosixPath:
    """The path of a zip entry, refusing any that would land outside the folder it is read into."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DataError(f"{field}: '{source}' holds an unsafe entry '{name}' (absolute path or '..'); refused - "
                        "rebuild the zip from inside the folder (cd folder && zip -r ../data.zip .)")
    return p


def _entries(source: str, field: str) -> list[tuple[PurePosixPath, object]]:
    """(relative path, bytes reader) for every file of a folder or zip, junk (__MACOSX, .DS_Store) left out."""
    path = Path(source).expanduser()
    out = []
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                out.append((PurePosixPath(f.relative_to(path).as_posix()), f.read_bytes))
    elif path.is_file():
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{field}: '{source}' is not a readable zip ({e}); upload a .zip of class "
                            "folders") from None
        for info in zf.infolist():
            p = _safe_member(info.filename, source, field)
            if not info.is_dir():
                out.append((p, lambda n=info.filename: zf.read(n)))
    else:
        raise DataError(f"{field}: '{source}' not found; give a folder or .zip with one subfolder per class")
    return [(p, r) for p, r in out if not any(part in IGNORED or part.startswith("._") for part in p.parts)]


def _readable(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types for a broken file
        return False


def read_imagefolder(source: str, field: str = "train_file", names: list[str] | None = None,
                     single: bool = False) -> tuple[dict, list[str]]:
    """Read an imagefolder (folder or zip): ({'train','validation','test'} datasets, skipped file names).

    Layout: `class/x.png`, or `train/class/x.png` + `test/class/...` (+ `validation/`); one wrapping folder (as
    zipping a folder makes) is looked through. `names` fixes the classes (for a separate validation folder).
    """
    import datasets

    entries = _entries(source, field)
    if not entries:
        raise DataError(f"{field}: '{source}' holds no files; it needs one subfolder of images per class")
    firsts = {p.parts[0] for p, _ in entries}
    while len(firsts) == 1 and any(len(p.parts) > 2 for p, _ in entries) and \
            next(iter(firsts)).lower() not in SPLIT_DIRS:  # a wrapping folder: look inside
        entries = [(PurePosixPath(*p.parts[1:]), r) for p, r in entries if len(p.parts) > 1]
        firsts = {p.parts[0] for p, _ in entries}
    # train/ validation/ test/ folders of class folders, or class folders directly
    deep = {p.parts[0] for p, _ in entries if len(p.parts) > 2}
    by_split = not single and bool(deep) and all(f.lower() in SPLIT_DIRS for f in deep)
    rows: dict[str, list] = {"train": [], "validation": [], "test": []}
    skipped = []
    for p, read in entries:
        parts = p.parts
        split = "train"
        if by_split and len(parts) > 2 and parts[0].lower() in SPLIT_DIRS:
            split, parts = SPLIT_DIRS[parts[0].lower()], parts[1:]
        if len(parts) < 2:  # a file beside the class folders (README, labels.csv): not an example
            skipped.append(str(p))
            continue
        data = read() if p.suffix.lower() in IMAGE_EXTENSIONS else None
        if data is None or not _readable(data):
            skipped.append(str(p))
            continue
        rows[split].append((parts[0], str(p), data))
    if not rows["train"]:
        raise DataError(f"{field}: '{source}' has no readable images in class folders"
                        f"{' (skipped ' + skipped[0] + ', ...)' if skipped else ''}; put images (PNG, JPEG, ...) "
                        "in one subfolder per class")
    classes = names or sorted({c for c, _, _ in rows["train"]})
    if len(classes) < 2:
        raise DataError(f"{field}: '{source}' has only one class folder ('{classes[0]}'); an imagefolder needs one "
                        "subfolder per class, at least two")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes),
                                  "text": datasets.Value("string")})
    out = {}
    for split, items in rows.items():
        unknown = sorted({c for c, _, _ in items} - set(classes))
        if unknown:
            raise DataError(f"{field}: {split} folder has classes not in training: {', '.join(unknown[:5])}; every "
                            "class needs training images")
        out[split] = datasets.Dataset.from_dict(
            {"image": [{"bytes": d, "path": n} for _, n, d in items], "label": [classes.index(c) for c, _, _ in items],
             "text": [n for _, n, _ in items]}, features=features) if items else None
    return out, skipped


def describe_archive(path: Path) -> str:
    """A one-line summary of an uploaded image zip, read with the trainer's own checks (unsafe entries, one class
    and no readable image are refused; unreadable files are counted)."""
    from collections import Counter

    parts, skipped = read_imagefolder(str(path), "train_file")
    names = parts["train"].features["label"].names
    counts = Counter()
    for ds in parts.values():
        if ds is not None:
            counts.update(names[i] for i in ds["label"])
    shown = ", ".join(f"{name} ({counts[name]})" for name in names[:12]) + (" …" if len(names) > 12 else "")
    split = ", ".join(f"{k} {len(v)}" for k, v in parts.items() if v is not None)
    bad = f" **{len(skipped)} files skipped** (not readable images: {', '.join(skipped[:3])}" \
          f"{' …' if len(skipped) > 3 else ''})." if skipped else ""
    return (f"Uploaded `{path.name}`: {sum(counts.values()):,} images ({split}) in {len(names)} classes: {shown}."
            f"{bad} Image folders need no column mapping.")


# ------------------------------------------------------------------------------------------------------------
# Hub datasets and columns


def image_column(ds, cfg) -> str | None:
    """The image column of a dataset (cfg.image_column, else the first datasets.Image feature), or None."""
    import datasets

    if cfg.image_column:
        return cfg.image_column if cfg.image_column in ds.column_names else None
    return next((n for n, f in ds.features.items() if isinstance(f, datasets.Image)), None)


def standardize(ds, cfg, field: str):
    """Columns image / label / text (a description per example) from a dataset with an image column."""
    import datasets

    cols = list(ds.column_names)
    image = image_column(ds, cfg)
    label = cfg.label_column or next((c for c in ("label", "labels") if c in cols), None) or \
        next((n for n, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), None)
    problems = []
    if image is None:
        what = f"column {cfg.image_column!r} not" if cfg.image_column else "no image column found"
        problems.append(f"image_column: {what} in {field} (columns: {', '.join(cols)}); set image_column")
    if label is None or label not in cols:
        problems.append(f"label_column: {'column ' + repr(label) + ' not' if label else 'no label column found'} in "
                        f"{field} (columns: {', '.join(cols)}); set label_column")
    if problems:
        raise DataError(problems)
    if not isinstance(ds.features[image], datasets.Image):
        ds = ds.cast_column(image, datasets.Image())  # file paths or bytes become decodable images
    text = "text" if "text" in cols and image != "text" and label != "text" else None
    ds = ds.select_columns([image, label] + ([text] if text else []))
    ds = ds.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})
    if text is None:
        ds = ds.add_column("text", [f"{field} #{i}" for i in range(len(ds))])
    return ds


# ------------------------------------------------------------------------------------------------------------
# samples of a finished run, for the UI: examples to predict and pictures of the mistakes

SAMPLE_EXAMPLES_PER_CLASS, SAMPLE_CLASSES, SAMPLE_MISTAKES = 1, 20, 48


def save_samples(out_dir: Path, ds, labels: list[int], probs, label_names: list[str]) -> Path:
    """Write validation images as PNGs under `out_dir` (replaced whole, by one rename) with `index.jsonl`:
    one correctly classified example per class (up to 20 classes) and up to 48 misclassified images, each line
    {"kind": "example" | "misclassified", "path" (relative to out_dir), "label", "prediction", "score", "text"}.

    `ds` is the validation split in the order of `labels` / `probs` (the evaluation order).
    """
    import json
    import os
    import shutil

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    preds = probs.argmax(-1).tolist()
    chosen, seen = [], set()
    for i, (y, p) in enumerate(zip(labels, preds)):
        if y == p and y not in seen and len(seen) < SAMPLE_CLASSES:
            seen.add(y)
            chosen.append(("example", i))
    chosen += [("misclassified", i) for i, (y, p) in enumerate(zip(labels, preds)) if y != p][:SAMPLE_MISTAKES]
    lines = []
    for n, (kind, i) in enumerate(chosen):
        rel = f"{'examples' if kind == 'example' else 'misclassified'}/{n:03d}.png"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        row = ds[i]
        row["image"].save(tmp / rel)
        lines.append(json.dumps({"kind": kind, "path": rel, "label": label_names[labels[i]],
                                 "prediction": label_names[preds[i]], "score": round(float(probs[i][preds[i]]), 6),
                                 "text": row.get("text")}))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "index.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
