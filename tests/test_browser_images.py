"""Images in the web app, end to end: a tiny `mlp` trained from scratch on real MNIST digits in this session,
then predicted through gradio_client (/predict_image, /predict_sketch, /model_examples, bad inputs) and a real
browser (pick the model, see the image widgets and the run's own validation images as examples, upload a held-out
digit, draw a "1" on the sketchpad without picking the brush first, each answer in its own box), and the
Fine-tuning tab's image pre-flight report and a tiny image run started from the tab. Screenshots go to
artifacts/images_*.png."""

from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import expect

from _app_fixtures import serve  # noqa: F401 - (browser: conftest)
from conftest import ROOT, wait_final

ART = ROOT / "artifacts"
DIGITS = [str(d) for d in range(10)]
# 120 real steps of the classic 784-256-10 MLP (no shift augmentation: it slows a tiny MLP down): ~0.9 accuracy
MNIST_ARGS = ["--dataset_name", "bundled:mnist", "--model_name_or_path", "mlp", "--max_steps", "120",
              "--per_device_train_batch_size", "64", "--per_device_eval_batch_size", "256", "--learning_rate", "2e-3",
              "--warmup_steps", "10", "--logging_steps", "40", "--eval_strategy", "steps", "--eval_steps", "120",
              "--save_steps", "120", "--augment", "false", "--seed", "7"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with a finished MNIST run `mnist` trained through the engine's CLI entry point, and `custom`:
    a few steps of the example user module (examples/custom_module.py) on sklearn digits, which needs user code."""
    from engine.training.run import main

    runs = tmp_path_factory.mktemp("image_runs")
    assert main([*MNIST_ARGS, "--output_dir", str(runs / "mnist")]) == 0
    assert main(["--dataset_name", "bundled:digits", "--model_name_or_path", "examples.custom_module:Net",
                 "--max_steps", "3", "--eval_strategy", "steps", "--eval_steps", "3", "--save_steps", "3",
                 "--output_dir", str(runs / "custom")]) == 0
    return runs


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Ten real MNIST digits from bundled:mnist's fixed test split (never trained on) as PNGs, with their labels."""
    from engine.data import BUNDLED

    test = BUNDLED["bundled:mnist"][0]()["test"]
    out, files = tmp_path_factory.mktemp("digits"), []
    for i in range(10):
        row = test[i * 97]
        path = out / f"test_{i * 97}.png"
        row["image"].save(path)
        files.append((path, DIGITS[row["label"]]))
    return files


@pytest.fixture(scope="module")
def served(runs):
    import app
    from ui.train_tab import manager

    with serve(app.build_app(runs_dir=runs)) as url:
        yield url
        mgr = manager(runs)
        mgr.stop_scheduler()
        for info in mgr.list_runs():
            if info["state"] in ("starting", "running", "queued"):
                mgr.cancel(info["name"], grace=2)


@pytest.fixture(scope="module")
def client(served):
    return Client(served, verbose=False)


def _top(value) -> str:
    return value["label"]


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"images_{name}.png"), full_page=True)


def test_predict_image_api_reads_held_out_digits(client, runs, held_out):
    from engine.serving.predictor import shared_predictor

    model = str(runs / "mnist")
    right = 0
    for path, truth in held_out:
        value, note = client.predict(handle_file(str(path)), model, "main", api_name="/predict_image")
        expected = shared_predictor().predict_image(model, str(path))
        assert _top(value) == next(iter(expected)) and f"**{_top(value)}**" in note
        assert len(value["confidences"]) == 5  # the five best of ten digit labels
        right += _top(value) == truth
    assert right >= 8, f"only {right}/10 held-out digits right"  # chance is 1/10


def test_model_info_and_sketch_api(client, runs, tmp_path):
    assert client.predict(str(runs / "mnist"), "main", api_name="/model_info").startswith(
        "image-classification: 0, 1, 2")
    # a drawing as the sketchpad sends it: a dark "7" on a white 280x280 canvas
    canvas = np.full((280, 280), 255, np.uint8)
    canvas[60:80, 70:210] = 0
    for y in range(80, 230):
        x = 200 - (y - 80) * 0.55
        canvas[y, int(x) - 10:int(x) + 10] = 0
    Image.fromarray(canvas).save(tmp_path / "drawn_7.png")
    value, note = client.predict({"background": None, "layers": [], "composite": handle_file(
        str(tmp_path / "drawn_7.png"))}, str(runs / "mnist"), "main", api_name="/predict_sketch")
    assert value["label"] == "7" and "**7**" in note  # centred and scaled like MNIST before the model sees it


def test_bad_image_inputs_each_get_one_clear_line(client, runs, tmp_path, tiny_run):
    model = str(runs / "mnist")
    digit = handle_file(str(ROOT / "ui/assets/digits/mnist_3.png"))
    with pytest.raises(AppError, match="image: none given; upload an image"):
        client.predict(None, model, "main", api_name="/predict_image")
    notes = tmp_path / "digit.png"
    notes.write_text("not an image, just text with a .png name\n")
    with pytest.raises(AppError, match="'digit.png' is not an image"):
        client.predict(handle_file(str(notes)), model, "main", api_name="/predict_image")
    with pytest.raises(AppError, match="sketch: nothing drawn"):
        client.predict(None, model, "main", api_name="/predict_sketch")
    with pytest.raises(AppError, match="model: none chosen"):
        client.predict(digit, None, "main", api_name="/predict_image")
    with pytest.raises(AppError, match="text-classification model, it reads text, not images"):
        client.predict(digit, str(tiny_run), "main", api_name="/predict_image")
    with pytest.raises(AppError, match="examples.custom_module:Net.*only from the command line"):
        client.predict(digit, str(runs / "custom"), "main", api_name="/predict_image")
    # the server keeps answering after every refusal
    value, _ = client.predict(digit, model, "main", api_name="/predict_image")
    assert value["label"] in DIGITS


def _run_examples(run) -> list[dict]:
    """The run's "example" lines of samples/index.jsonl (engine.images.save_samples), in label order."""
    lines = [json.loads(line) for line in (run / "samples" / "index.jsonl").read_text().splitlines()]
    return sorted((e for e in lines if e["kind"] == "example"), key=lambda e: int(e["label"]))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_model_examples_api_gives_the_runs_samples(client, runs, served, tmp_path):
    expected = _run_examples(runs / "mnist")
    assert [e["label"] for e in expected] == DIGITS  # one correctly classified validation image per digit
    texts, _, images, hint = client.predict(str(runs / "mnist"), api_name="/model_examples")
    assert texts["samples"] == [] and images["visible"] is True and hint["visible"] is False
    assert "Validation images of this run" in images["label"] and "0, 1, 2, 3" in images["label"]
    assert len(images["samples"]) == len(expected)
    for (shown,), e in zip(images["samples"], expected):  # the very pixels of samples/, served as PNG
        with urllib.request.urlopen(f"{served}gradio_api/file={shown}") as r:  # (a path in gradio's cache)
            got = _pixels(r.read())
        assert np.array_equal(got, np.asarray(Image.open(runs / "mnist" / "samples" / e["path"]).convert("L")))

    # a digit run from before samples/ existed: real MNIST digits from ui/assets instead, and it says so
    old = tmp_path / "old_mnist"
    old.mkdir()
    for name in ("model", "status.json", "metrics.json", "eval_predictions.jsonl"):
        (old / name).symlink_to(runs / "mnist" / name)
    _, _, images, hint = client.predict(str(old), api_name="/model_examples")
    assert len(images["samples"]) == 10 and "Real MNIST digits" in images["label"] and "no samples/" in images["label"]
    # a Hub id: no examples, one line why
    _, _, images, hint = client.predict("someone/vit-digits", api_name="/model_examples")
    assert images["visible"] is False and hint["visible"] is True and "No examples" in hint["value"]


def test_browser_image_examples_are_the_runs_samples(browser, served, runs):
    from engine.serving.predictor import shared_predictor

    expected = _run_examples(runs / "mnist")
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    try:
        page.goto(served)
        page.locator("#predict-model input").click()
        page.get_by_role("option").filter(has_text="mnist").first.click()
        gallery = page.locator("#predict-image-examples")
        thumbs = gallery.locator("img")
        expect(thumbs).to_have_count(len(expected))  # all ten, one per digit
        assert "Validation images of this run" in gallery.inner_text()
        for i in (0, 7):  # what the page shows is the run's own PNG, pixel for pixel
            got = _pixels(page.request.get(thumbs.nth(i).get_attribute("src")).body())
            assert np.array_equal(got, np.asarray(Image.open(runs / "mnist" / "samples" /
                                                             expected[i]["path"]).convert("L")))
        thumbs.nth(6).click()  # clicking one puts it in the upload box; Predict image reads it like the engine
        page.locator("#predict-image img").wait_for()
        page.locator("#predict-image-button").click()
        note = page.locator("#predict-image-note")
        page.wait_for_function("e => /of 10 labels/.test(e.innerText) && !/[0-9]\\.[0-9]s/.test(e.innerText)",
                               arg=note.element_handle())
        engine = shared_predictor().predict_image(str(runs / "mnist"),
                                                  str(runs / "mnist" / "samples" / expected[6]["path"]))
        top = next(iter(engine))
        assert top == expected[6]["label"] == "6"
        assert page.locator("#predict-image-label .output-class").inner_text().strip() == top
        assert f"{top} ({engine[top]:.0%})" in note.inner_text()
        _shot(page, "0_examples")
    finally:
        page.close()


def test_browser_upload_and_draw_a_digit(browser, served, held_out):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(60_000)
    try:
        page.goto(served)
        page.locator("#predict-model input").click()
        page.get_by_role("option").filter(has_text="mnist").first.click()
        page.locator("#predict-image-group").first.wait_for(state="visible")
        page.locator("#predict-sketch").wait_for(state="visible")
        assert not page.locator("#predict-text").is_visible()  # the text box is for text models,
        assert not page.get_by_text("Batch: classify a file").is_visible()  # and so are file batches
        assert "image-classification" in page.locator("#predict-model-info").inner_text()

        path, truth = next((p, t) for p, t in held_out if t != "1")  # so the drawn 1 is a new answer
        page.locator("#predict-image input[type=file]").set_input_files(str(path))
        page.locator("#predict-image img").wait_for()
        page.locator("#predict-image-button").click()
        note = page.locator("#predict-image-note")
        page.wait_for_function("e => /of 10 labels/.test(e.innerText) && !/[0-9]\\.[0-9]s/.test(e.innerText)",
                               arg=note.element_handle())
        assert page.locator("#predict-image-label .output-class").inner_text().strip() == truth
        _shot(page, "1_upload")

        before = note.inner_text()
        _draw_one(page)
        page.locator("#predict-sketch-button").click()
        # the drawing's answer lands in its own box (while it runs the note also shows a timer such as "1.1s")
        sketch_note = page.locator("#predict-sketch-note")
        page.wait_for_function("e => /of 10 labels/.test(e.innerText) && !/[0-9]\\.[0-9]s/.test(e.innerText)",
                               arg=sketch_note.element_handle(), timeout=30_000)
        drawn = page.locator("#predict-sketch-label .output-class").inner_text().strip()
        page.locator("#predict-sketch-label [data-testid=status-tracker].hide").wait_for(state="attached")
        _shot(page, "2_sketch")
        assert drawn == "1", f"the drawn 1 was read as {drawn}"
        assert ": 1 (" in sketch_note.inner_text()
        # and the upload's answer is still there, untouched
        assert page.locator("#predict-image-label .output-class").inner_text().strip() == truth
        assert note.inner_text() == before

        # clearing the canvas keeps the brush: the next drag draws again
        sketch = page.locator("#predict-sketch")
        sketch.get_by_role("button", name="Clear canvas").click()
        page.wait_for_function("() => document.querySelector('#predict-sketch button[aria-label=\"Brush\"]')"
                               "?.classList.contains('highlight')")
    finally:
        page.close()


def _draw_one(page):
    """Drag a vertical stroke down the middle of the canvas, like a hand-drawn '1', as a new user would: the
    brush is already selected (the app presses it), nobody clicks it first."""
    sketch = page.locator("#predict-sketch")
    page.wait_for_function("() => document.querySelector('#predict-sketch button[aria-label=\"Brush\"]')"
                           "?.classList.contains('highlight')")
    box = sketch.locator("canvas").first.bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(x + k * 0.2, box["y"] + box["height"] * (0.2 + 0.6 * k / 20))
    page.mouse.up()


# --- the Fine-tuning tab with images (gradio_client, like any Space) --------------------------------------------


def _tab_args(client, **values) -> list:
    """Positional arguments of /train_check and /train_start: the API's own defaults with `values` set."""
    from ui.train_tab import forms_names

    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train_check"]["parameters"]
    names = ["run_name", "accel", "base_model", "source", "bundled", "hub_id", "text_col", "label_col", *forms_names()]
    assert len(names) == len(params), "the Fine-tuning tab's inputs changed; update this list"
    return [values.get(n, p.get("parameter_default")) for n, p in zip(names, params)]


def _zip(path, entries: dict):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _png(array) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_finetune_tab_zip_uploads(client, tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    real = {f"digits/{d.target[i]}/{i}.png": _png(np.clip(d.images[i] * 16, 0, 255).astype(np.uint8))
            for i in range(60) if d.target[i] in (0, 1, 2)}
    good = _zip(tmp_path / "three digits.zip", {**real, "digits/1/broken.png": b"not a png"})
    *_, note = client.predict(handle_file(str(good)), api_name="/train_upload")  # (the stored path is state)
    n = len(real)
    assert f"{n} images" in note and "3 classes" in note and "1 files skipped" in note and "broken.png" in note
    problems, report, *_ = client.predict(*_tab_args(client, base_model="mlp", source="Upload a file", max_steps=4),
                                          api_name="/train_check")
    assert problems.startswith("✓") and "8×8" in report and "Token lengths" not in report, (problems, report)

    escaping = _zip(tmp_path / "escape.zip", {"../evil/0/a.png": next(iter(real.values())), **real})
    with pytest.raises(AppError, match="unsafe entry '../evil/0/a.png'"):
        client.predict(handle_file(str(escaping)), api_name="/train_upload")
    one = _zip(tmp_path / "one class.zip", {k: v for k, v in real.items() if "/0/" in k})
    with pytest.raises(AppError, match="only one class folder"):
        client.predict(handle_file(str(one)), api_name="/train_upload")


def test_finetune_tab_image_preflight_user_code_and_a_tiny_run(client, runs):
    from engine.serving.predictor import model_task
    from ui.train_tab import manager

    args = _tab_args(client, base_model="mlp", source="Bundled dataset", bundled="bundled:mnist", max_steps=300,
                     per_device_train_batch_size=32)
    problems, report, first_rows, counts, command, yaml_text, _ = client.predict(*args, api_name="/train_check")
    assert problems.startswith("✓"), problems
    assert "Image sizes" in report and "28×28" in report and "1×28×28 (grayscale)" in report, report
    assert "300 optimizer steps" in report and re.search(r"ETA\*\*: about \d", report), report
    assert "Token lengths" not in report and "dataset_name: bundled:mnist" in yaml_text
    assert [row[1] for row in counts["data"]] == [360] * 10 and "-m accelerate.commands.launch" in command

    with pytest.raises(AppError, match="loading user code is off in the web app"):
        client.predict(*_tab_args(client, base_model="examples.custom_module:Net"), api_name="/train_check")
    with pytest.raises(AppError, match="loading user code is off in the web app"):
        client.predict(*_tab_args(client, base_model="examples.custom_module:Net", run_name="nope"),
                       api_name="/train_start")
    assert not (runs / "nope").exists()

    start = _tab_args(client, run_name="digits-mlp", base_model="mlp", source="Bundled dataset",
                      bundled="bundled:digits", max_steps=10, learning_rate=0.003, logging_steps=5)
    assert "started" in client.predict(*start, api_name="/train_start")[0]
    info = wait_final(manager(runs), "digits-mlp")  # the served app's own job runner
    assert info["state"] == "done", (runs / "digits-mlp" / "train.log").read_text()[-2000:]
    assert model_task(runs / "digits-mlp" / "model") == "image-classification"
