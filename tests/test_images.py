"""Image classification: from-scratch models on real digits, a user nn.Module with its own autograd op, imagefolder
zips, prediction from PIL / numpy / paths / drawings, and the bad inputs (one line each, nothing written)."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.serving.predictor import Predictor, model_task
from engine.training.run import main as train_main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "256", "--logging_steps", "25",
        "--eval_strategy", "steps", "--mixed_precision", "no", "--seed", "3"]


def _train(out, *args):
    return train_main([*FAST, "--output_dir", str(out), *map(str, args)])


@pytest.fixture(scope="module")
def mnist_test():
    """The fixed test split of bundled:mnist (real digits the models never train on)."""
    from engine.bundled import BUNDLED

    return BUNDLED["bundled:mnist"][0]()["test"]


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """The built-in mlp (784 -> 256 -> 10) trained from scratch on 3,600 real MNIST digits, 250 steps."""
    out = tmp_path_factory.mktemp("img") / "mnist_mlp"
    assert _train(out, "--model_name_or_path", "mlp", "--dataset_name", "bundled:mnist", "--max_steps", 200,
                  "--learning_rate", 2e-3, "--eval_steps", 100, "--save_steps", 100) == 0
    return out


def test_mlp_from_scratch_on_mnist_reaches_the_bar(mnist_run):
    metrics = json.loads((mnist_run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85, metrics["accuracy"]  # held-out validation (10% of the training split)
    assert metrics["test"]["accuracy"] >= 0.85, metrics["test"]["accuracy"]  # the fixed 1,000-digit test split
    cm = np.array(metrics["validation"]["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == metrics["validation"]["num_samples"] == 400
    assert np.trace(cm) / cm.sum() == pytest.approx(metrics["accuracy"])
    # the run directory contract, as for text runs
    model = mnist_run / "model"
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= {p.name for p in model.iterdir()}
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["HubtuneMLPForImageClassification"] and config["hubtune_module"] == "builtin:mlp"
    assert config["id2label"] == {str(d): str(d) for d in range(10)} and config["num_channels"] == 1
    assert config["image_size"] == 28 and model_task(model) == "image-classification"
    assert json.loads((mnist_run / "status.json").read_text())["state"] == "done"
    events = [json.loads(line) for line in (mnist_run / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["type"] == "train"]
    assert train and all(e["padding_waste"] == 0 and e["mfu"] > 0 for e in train)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [100, 200]
    rows = [json.loads(line) for line in (mnist_run / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and rows[0]["text"].startswith("mnist #")


def test_predictor_reads_real_test_digits_in_any_form(mnist_run, mnist_test, tmp_path):
    predictor = Predictor()
    lm = predictor.load(str(mnist_run))
    assert lm.task == "image-classification" and lm.labels == [str(d) for d in range(10)]
    rows = mnist_test.select(range(100))
    hits = 0
    for row in rows:
        probs = predictor.predict_image(str(mnist_run), row["image"])
        assert list(probs.values()) == sorted(probs.values(), reverse=True) and sum(probs.values()) == \
            pytest.approx(1.0, abs=1e-4)
        hits += next(iter(probs)) == str(row["label"])
    assert hits >= 80, hits
    # the same digit as a float array, as RGB (converted to the model's 1 channel), and as a PNG file
    im, label = rows[0]["image"], str(rows[0]["label"])
    gray = predictor.predict_image(str(mnist_run), im)
    as_float = predictor.predict_image(str(mnist_run), np.asarray(im, dtype=np.float32) / 255.0)
    rgb = predictor.predict_image(str(mnist_run), np.stack([np.asarray(im)] * 3, -1))
    im.save(tmp_path / "digit.png")
    from_path = predictor.predict_image(str(mnist_run), str(tmp_path / "digit.png"))
    for other in (as_float, rgb, from_path):
        assert other[label] == pytest.approx(gray[label], abs=1e-4)
    from engine.serving.predictor import PredictError

    with pytest.raises(PredictError, match="image-classification model; give it images"):
        predictor.predict_text(str(mnist_run), "seven")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(Exception, match="'bad.png' is not a readable image"):
        predictor.predict_image(str(mnist_run), str(tmp_path / "bad.png"))


def test_drawings_become_mnist_style_inputs(mnist_run, mnist_test):
    """A dark digit on white (or transparent) paper at sketchpad size is inverted, cropped and centred."""
    from engine.tasks.image_classification.inputs import to_model_input

    predictor = Predictor()
    hits = 0
    for row in mnist_test.select(range(100, 120)):
        ink = 255 - np.asarray(row["image"].resize((280, 280), Image.BILINEAR))  # dark stroke on white, 10x size
        rgba = np.zeros((280, 280, 4), dtype=np.uint8)
        rgba[..., 3] = 255 - ink  # the stroke opaque black, the paper transparent (a sketchpad layer)
        for drawing in (ink, rgba):
            x = to_model_input(drawing)
            arr = np.asarray(x)
            assert x.size == (28, 28) and arr[0].max() == arr[-1].max() == 0  # black border, like MNIST
            hits += next(iter(predictor.predict_image(str(mnist_run), x))) == str(row["label"])
    assert hits >= 30, hits  # of 40
    assert np.asarray(to_model_input(np.full((50, 50), 255, np.uint8))).max() == 0  # nothing drawn: black


def test_predict_cli_prints_the_label(mnist_run, mnist_test, tmp_path, capsys):
    from engine.serving.predictor import main as predict_main

    row = mnist_test[0]
    row["image"].save(tmp_path / "d.png")
    assert predict_main(["--model", str(mnist_run), "--image", str(tmp_path / "d.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["label"] == max(out["scores"], key=out["scores"].get) and len(out["scores"]) == 5


def test_custom_module_with_autograd_function_trains_and_predicts(tmp_path, monkeypatch, capsys):
    """examples/custom_module.py:Net (hand-written Swish backward) through the same loop, saved, rebuilt, served."""
    monkeypatch.chdir(ROOT)
    from examples.custom_module import Swish

    import torch

    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Swish.apply, (x,))  # the hand-derived backward is the true derivative
    before = Swish.calls
    out = tmp_path / "custom"
    assert _train(out, "--model_name_or_path", "examples.custom_module:Net", "--dataset_name", "bundled:digits",
                  "--max_steps", 120, "--learning_rate", 3e-3, "--eval_steps", 120, "--save_steps", 1000) == 0
    assert Swish.calls - before >= 120  # the custom op's backward ran at every step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.85, metrics["test"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["hubtune_module"] == "examples.custom_module:Net" and config["image_size"] == 8
    assert config["architectures"] == ["HubtuneModuleForImageClassification"]
    # served by the CLI (user code allowed there) ...
    from engine.bundled import BUNDLED
    from engine.serving.predictor import main as predict_main

    test = BUNDLED["bundled:digits"][0]()["test"]
    test[0]["image"].save(tmp_path / "d.png")
    capsys.readouterr()
    assert predict_main(["--model", str(out), "--image", str(tmp_path / "d.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == str(test[0]["label"])
    # ... and refused where user code is not allowed (the web app), also when another caller cached it
    from engine.tasks.image_classification.models import UserCodeError

    with pytest.raises(UserCodeError, match="allowed only from the command line"):
        Predictor().predict_image(str(out), test[0]["image"])
    shared = Predictor(allow_user_code=True)
    assert shared.predict_image(str(out), test[0]["image"])
    with pytest.raises(UserCodeError, match="allowed only from the command line"):
        shared.predict_image(str(out), test[0]["image"], allow_user_code=False)


def _digit_pngs(root: Path, classes=("0", "1", "7"), per_class=25, rgb_every=2) -> None:
    """Real sklearn digits written as PNG files in one folder per class (every other one as RGB)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(d.target == int(c))[:per_class]
        for n, i in enumerate(idx):
            im = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8))
            (im.convert("RGB") if n % rgb_every == 0 else im).save(root / c / f"{i}.png")


def test_imagefolder_zip_with_junk_trains_and_mixed_modes_become_rgb(tmp_path):
    from engine.tasks.image_classification.data import read_imagefolder

    _digit_pngs(tmp_path / "digits")
    (tmp_path / "digits" / "7" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "digits" / "README.txt").write_text("three classes of real digits")
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "digits").rglob("*")):
            zf.write(f, f.relative_to(tmp_path).as_posix())  # inside a wrapping folder, as zipping a folder does
    parts, skipped = read_imagefolder(str(archive))
    assert sorted(skipped) == ["7/broken.png", "README.txt"]
    assert parts["train"].features["label"].names == ["0", "1", "7"] and len(parts["train"]) == 75
    parts_dir, skipped_dir = read_imagefolder(str(tmp_path / "digits"))
    assert len(parts_dir["train"]) == 75 and len(skipped_dir) == 2

    out = tmp_path / "zip_run"
    assert _train(out, "--model_name_or_path", "mlp", "--train_file", archive, "--max_steps", 30,
                  "--learning_rate", 3e-3, "--eval_steps", 30, "--save_steps", 1000,
                  "--validation_split_percentage", 20) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_channels"] == 3 and config["id2label"] == {"0": "0", "1": "1", "2": "7"}
    assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.8
    gray = Image.open(next((tmp_path / "digits" / "1").glob("*.png"))).convert("L")
    assert next(iter(Predictor().predict_image(str(out), gray))) == "1"  # grayscale into an RGB model


def test_vit_tiny_from_scratch_saves_a_transformers_model(tmp_path):
    out = tmp_path / "vit"
    assert _train(out, "--model_name_or_path", "vit-tiny", "--dataset_name", "bundled:digits", "--max_steps", 8,
                  "--learning_rate", 1e-3, "--eval_steps", 8, "--save_steps", 1000, "--max_eval_samples", 64,
                  "--augment", "true") == 0
    model = out / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["ViTForImageClassification"] and config["image_size"] == 8
    assert config["num_channels"] == 1 and config["patch_size"] == 2
    assert json.loads((model / "preprocessor_config.json").read_text())["size"] == {"height": 8, "width": 8}
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    AutoModelForImageClassification.from_pretrained(model)  # a plain transformers checkpoint
    AutoImageProcessor.from_pretrained(model)
    train = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"train"' in x]
    assert train[-1]["tokens_per_second"] == pytest.approx(train[-1]["samples_per_second"] * 17, rel=0.01)
    probs = Predictor().predict_image(str(out), np.zeros((8, 8), np.uint8))
    assert set(probs) == {str(d) for d in range(10)}


# --- bad input: one clear line, exit code 2, nothing written -------------------------------------------------


def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case,args,message", [
    ("missing module", ["--model_name_or_path", "no_such_pkg.models:Net"], "cannot import module 'no_such_pkg.models'"),
    ("missing class", ["--model_name_or_path", "examples.custom_module:Nope"], "has no class 'Nope'"),
    ("not a module", ["--model_name_or_path", "examples.custom_module:NotAModule"], "is not a torch.nn.Module"),
    ("text model", [], "is a text model and bundled:digits holds images"),
])
def test_bad_models_for_images(case, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert _train(out, "--dataset_name", "bundled:digits", *args) == 2
    err = capsys.readouterr().err
    assert message in err and len([x for x in err.splitlines() if x.startswith("hubtune: error")]) == 1, err
    assert not out.exists()


def test_bad_imagefolders_are_refused(tmp_path, capsys):
    from engine.data import DataError
    from engine.tasks.image_classification.data import read_imagefolder

    escaping = _zip(tmp_path / "evil.zip", {"0/a.png": _png(), "../../outside.png": _png(), "1/b.png": _png()})
    with pytest.raises(DataError, match=r"unsafe entry '\.\./\.\./outside\.png'"):
        read_imagefolder(str(escaping))
    absolute = _zip(tmp_path / "abs.zip", {"0/a.png": _png(), "/etc/x.png": _png()})
    with pytest.raises(DataError, match="unsafe entry '/etc/x.png'"):
        read_imagefolder(str(absolute))
    one = _zip(tmp_path / "one.zip", {"cats/a.png": _png(), "cats/b.png": _png()})
    with pytest.raises(DataError, match="only one class folder \\('cats'\\)"):
        read_imagefolder(str(one))
    junk = _zip(tmp_path / "junk.zip", {"0/a.png": b"garbage", "1/b.jpg": b"more garbage"})
    with pytest.raises(DataError, match="no readable images.*skipped 0/a.png"):
        read_imagefolder(str(junk))
    out = tmp_path / "run"
    assert _train(out, "--model_name_or_path", "mlp", "--train_file", escaping) == 2
    assert "unsafe entry" in capsys.readouterr().err and not out.exists()
    assert not (tmp_path.parent / "outside.png").exists()


def test_web_job_runner_refuses_user_code(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from engine.runs.jobs import JobManager
    from engine.tasks.image_classification.models import UserCodeError

    mgr = JobManager(tmp_path / "runs")
    with pytest.raises(UserCodeError, match="examples.custom_module:Net.*command line"):
        mgr.prepare({"model_name_or_path": "examples.custom_module:Net", "dataset_name": "bundled:digits"})
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")] == []
    job = mgr.prepare({"model_name_or_path": "mlp", "dataset_name": "bundled:mnist"})  # built-ins are fine
    assert (tmp_path / "runs" / job["name"] / "config.yaml").is_file()
