"""Prediction tab: pick a model (a finished run or a Hub id at a revision), classify text, a file, or compare two.

API (gradio_client, like any Space): /predict (text, model, revision[, precision]) -> (label, note); precision:
auto (default), fp32, int8, bf16 where native (engine/serving/predictor.py); the label is gr.Label's
{label, confidences}: the top class (single-label), every label over its threshold as "a, b" with all scores
(multi-label), or "0.41  (training range -4 to 4)" without scores (regression; ui/heads_view.prediction);
/predict_file (file, model, revision, text_column[, precision]) -> (predictions file, preview, note);
/compare (text, model_a, revision_a, model_b, revision_b[, precision]) -> (label_a, label_b, note);
/list_models () -> picker update; /model_info (model, revision) -> info (and the input widgets of the model's task only);
/model_examples (model) -> (text examples, hint, image examples, hint): the run's own validation data
(ui/examples.py); /pick_text_example (example) -> text;
/predict_image and /predict_sketch (ui/predict_images.py): the loaded model's task picks the input widget.
/explain (text, model, revision, steps, label) -> (highlighted words, note): Integrated Gradients below the
prediction, in its own queue (ui/explain_view.py; images: /explain_image, /explain_sketch).
Every handler runs engine code and turns its one-line errors into gr.Error; torch is imported on first use only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import gradio as gr

from engine import tasks
from engine.metrics import one_class_warning
from engine.modeling import is_path_like, missing_folder
from engine.rundir import read_json
from engine.serving import batcher
from engine.hub import client as hub_client
from engine.serving.predictor import check_text, shared_predictor
from engine.tasks.text_classification.auto_precision import describe as describe_precision
from ui import examples, explain_view, heads_view, predict_images
from ui.common import AppContext, finished_runs, model_dir, progress_adapter, show_errors, ui_errors

FILE_TYPES = [".csv", ".jsonl", ".parquet"]
# the input kind of the picked model's task (engine.tasks) decides which input group is shown
INPUT_KINDS = ("text", "image")
# several users may predict at once (the engine's model cache and tokenizer locks make that safe), and their texts
# share forward passes (engine/serving/batcher.py): the more events run at once, the larger the batches they gather into
CONCURRENCY = int(os.environ.get("HUBTUNE_PREDICT_CONCURRENCY", "16"))
# the preview pins predicted_label and score first and shows PREVIEW_SHOWN characters of a cell (a click shows
# more), so one long text cannot push the other columns out of view; cells reach the page cut to PREVIEW_CHARS
PREVIEW_FIRST = ("predicted_label", "score")
# what the other heads write (engine/serving/files.py): multi-label predicted_labels and score_<label> columns,
# regression prediction
PREVIEW_HEAD_FIRST = ("predicted_labels", "prediction")
PREVIEW_SHOWN = 60
PREVIEW_CHARS = 500
# Timed on the 2-core CPU this app is developed on (bf16; once with an empty HF cache, once with others' jobs
# running): 33-35 s, validation accuracy 0.975 on 200 held-out articles (chance 0.2). The first 64 tokens of a
# BBC article (headline and lead) already name its topic; the old 100-step, 128-token hint took ~11 minutes.
QUICK_TRAIN = ("--dataset_name bundled:bbc_news --max_train_samples 800 --max_eval_samples 200 --max_seq_length 64 "
               "--per_device_train_batch_size 16 --max_steps 50 --learning_rate 2e-4")


def empty_state(runs_dir: Path) -> str:
    """What a fresh machine shows instead of a model list: how to get a model."""
    return (f"**No finished run yet** in `{runs_dir}`. Train one in the **Fine-tuning** tab, or from the shell:\n\n"
            f"`python -m engine.train {QUICK_TRAIN} --output_dir {runs_dir}/bbc`\n\n"
            "(works offline; about 35 seconds on a 2-core CPU, for a model that gets about 97% of held-out BBC "
            "articles right). Then press **Refresh runs**. With Hub access you can also type a Hub id such as "
            "`user/model` into the model box.")


def model_choices(runs_dir: Path, value: str | None = None) -> dict:
    """A gr.update for a model picker: finished runs (newest first), keeping `value` or picking the newest.

    Other tabs call this after a run finishes: `outputs=ctx.components["prediction.model"]`.
    """
    runs = finished_runs(runs_dir)
    paths = [p for _, p in runs]
    if not value:
        value = paths[0] if paths else None
    return gr.update(choices=runs, value=value)


def _note(name: str, revision: str, lm, tokens: int, truncated: bool, said: str = "", precision: str = "auto") -> str:
    where = "" if Path(name).expanduser().exists() else f" @ {revision or 'main'}"
    cut = f" — **text truncated** to the first {tokens} tokens" if truncated else f" — {tokens} tokens"
    return (f"{said}\n\n" if said else "") + f"`{name}`{where}: {_outputs(lm)}{cut}{_ran_in(lm, precision)}"


def precision_choices() -> list[str]:
    """The Precision picker: auto, the exact fp32, int8 (CPU), bf16 only where it is native (emulated it is slower
    than fp32). Read from /proc/cpuinfo, without torch."""
    from engine.hardware import cpu_supports_bf16

    return ["auto", "fp32", "int8", *(["bf16"] if cpu_supports_bf16() else [])]


def _ran_in(lm, precision: str) -> str:
    """What the prediction ran in: the precision picked, or what 'auto' resolved to for this model (with the
    agreement it was chosen on, from the run's precision.json)."""
    if lm.kind.input_kind != "text":
        return ""
    auto = (precision or "auto") == "auto"
    chosen = lm.auto if auto else precision
    if not chosen:
        return ""
    why = describe_precision(lm.name) if auto else None  # "precision: int8 (99.8% agreement with fp32 on ...)"
    why = why.removeprefix("precision: ").removeprefix(chosen).strip(" ()") if why and "measured on" not in why else ""
    notes = [n for n in (f"auto: {why}" if why else "auto" if auto else "",
                         "close calls re-run in fp32" if chosen == "int8" else "") if n]
    return f", {chosen}" + (f" ({'; '.join(notes)})" if notes else "")


def _outputs(lm) -> str:
    return f"{len(lm.labels)} labels" if len(lm.labels) > 1 else f"one output ({lm.labels[0]})"


@ui_errors(toast=False)
def predict(text: str, model: str, revision: str, precision: str = "auto", progress=gr.Progress()):
    """Labels with probabilities for one text (multi-label: the labels over their thresholds, with every score;
    regression: the number beside the training range; ui/heads_view.prediction)."""
    text = check_text(text)
    predictor = shared_predictor()
    lm = predictor.load(model, revision, progress_adapter(progress))
    output = batcher.predict_text(model, text, revision, predictor=predictor, precision=precision or None)
    shown, said = heads_view.prediction(lm.head, output)
    return shown, _note(model, revision, lm, *predictor.tokens_used(lm, text), said, precision)


@ui_errors(toast=False)
def compare(text: str, model_a: str, revision_a: str, model_b: str, revision_b: str, precision: str = "auto",
            progress=gr.Progress()):
    """The same text through two models, side by side."""
    text = check_text(text)
    predictor = shared_predictor()
    report = progress_adapter(progress)
    out, notes, decisions = [], [], []
    for side, (model, revision) in (("A", (model_a, revision_a)), ("B", (model_b, revision_b))):
        lm = predictor.load(model, revision, report)
        output = batcher.predict_text(model, text, revision, predictor=predictor, precision=precision or None)
        shown, said = heads_view.prediction(lm.head, output)
        out.append(shown)
        decisions.append(heads_view.decision(lm.head, output))
        notes.append(f"{side}: {_note(model, revision, lm, *predictor.tokens_used(lm, text), said, precision)}")
    agree = decisions[0] == decisions[1]
    notes.append("The two models **agree**." if agree else "The two models **disagree**.")
    return out[0], out[1], "\n\n".join(notes)


@ui_errors(toast=False)
def predict_file(file: str | None, model: str, revision: str, text_column: str, precision: str = "auto",
                 progress=gr.Progress()):
    """A csv/jsonl/parquet file back with predicted_label and score columns, plus a preview."""
    if not file:
        raise gr.Error("file: none uploaded; upload a .csv, .jsonl or .parquet file", print_exception=False)
    src = Path(file)
    out = Path(tempfile.mkdtemp(prefix="hubtune-predictions-")) / f"{src.stem}.predictions{src.suffix.lower()}"
    res = shared_predictor().predict_file(model, str(src), str(out), text_column or None, revision,
                                          progress=progress_adapter(progress), precision=precision or None)
    note = (f"{res.rows:,} rows classified from column `{res.text_column}` in {res.seconds:.1f} s "
            f"({res.rows / max(res.seconds, 1e-9):.0f} rows/s); first {len(res.preview)} shown below "
            "(click a cell to read more of it; the file has every text whole).")
    return str(res.output), preview_table(res.preview), note, gr.update(visible=True)


def preview_table(df):
    """The preview of a predictions file: predicted_label and score first (the file keeps the input's order),
    text cells cut to PREVIEW_CHARS characters."""
    import pandas as pd

    scores = [c for c in df.columns if str(c).startswith("score_")]  # a multi-label file's per-label scores
    first = [c for c in (*PREVIEW_FIRST, *PREVIEW_HEAD_FIRST) if c in df.columns] + scores
    df = df[first + [c for c in df.columns if c not in first]].copy()

    def cut(value):
        if isinstance(value, str) and len(value) > PREVIEW_CHARS:
            return value[:PREVIEW_CHARS - 1].rstrip() + "…"
        return value

    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]):  # object or pandas' str dtype
            df[column] = df[column].map(cut)
    return df


def _one_class(model: str) -> str | None:
    """The engine's one-class warning for a run whose validation predictions are (almost) all one label."""
    run = examples.run_dir(model)
    if run is None:
        return None
    validation = (read_json(run / "metrics.json", {}) or {}).get("validation") or {}
    return one_class_warning(validation) if isinstance(validation, dict) else None


def _local_info(model: str, path: Path) -> tuple[str, str]:
    """(input kind, info) of a model folder, from its config.json and the run's records."""
    task = tasks.for_model(path)
    info = f"{task.tag}: {heads_view.describe(json.loads((path / 'config.json').read_text()))}"
    precision = describe_precision(model) if task.input_kind == "text" else None  # the run's precision.json
    if precision:
        info += f"\n\n{precision}"
    warning = _one_class(model)
    if warning:
        info += f"\n\n⚠️ **Predicts one class only**: {warning}"
    return task.input_kind, info


def _hub_info(model: str, revision: str) -> tuple[str, str]:
    """(input kind, info) of a Hub id from its config.json alone: the weights wait for the first prediction."""
    if is_path_like(model):  # runs/nope: a missing folder, as predicting it says; never asked of the Hub
        raise missing_folder(model, "model")
    config = hub_client.model_config(model, revision or None)
    task = tasks.for_config(config, model)
    return task.input_kind, (f"Hub model `{model}` @ {revision or 'main'} · {task.tag}: {heads_view.describe(config)}"
                             " (weights are downloaded on the first prediction)")


def _kind_and_info(model: str, revision: str) -> tuple[str | None, str]:
    if not model:
        return None, ""
    path = Path(model).expanduser()
    path = path / "model" if (path / "model" / "config.json").exists() else path
    try:
        return _local_info(model, path) if path.is_dir() else _hub_info(model, revision)
    except Exception as e:  # noqa: BLE001 - shown as a hint; predicting gives the full error
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        hub = not path.is_dir() and not is_path_like(model)
        return None, f"⚠️ {'Hub model `' + model + '`: ' if hub else ''}{line}"


def model_info(model: str, revision: str):
    """Describe a picked model and show the input widgets of its task only (read from config.json: the folder's,
    or the Hub repo's at the revision): (info, text group, image group, sketchpad, text-only tools, precision,
    kind) updates; the sketchpad only for digit models, the precision picker only for text models (images are
    predicted in fp32). A model whose task is unknown (e.g. an unreadable Hub id) gets the text input."""
    kind, info = _kind_and_info(model, revision)
    shown = kind or "text"
    digits = kind == "image" and predict_images.is_digit_model(model)
    return (info, *[gr.update(visible=shown == k) for k in INPUT_KINDS], gr.update(visible=digits),
            gr.update(visible=shown == "text"), gr.update(visible=shown == "text"), kind)


@ui_errors
def model_examples(model: str, kind: str | None = None):
    """Examples from the picked run's validation data: (text Dataset, text hint, image Dataset, image hint).
    `kind`: the input kind model_info found (None: judged here from a local folder); a hint goes only to the
    input that is shown."""
    path = model_dir(model)
    if kind is None and path is not None:
        try:
            kind = tasks.for_model(path).input_kind
        except Exception:  # noqa: BLE001 - model_info shows the problem; examples just stay empty
            kind = None
    found = examples.for_model(model, kind)
    texts = gr.Dataset(samples=[[e["text"], e["label"]] for e in found.texts], visible=bool(found.texts))
    hint = gr.update(value=found.hint, visible=bool(found.hint) and kind != "image")
    image_examples, image_hint = predict_images.example_updates(model, found)
    if kind != "image":
        image_hint = gr.update(value="", visible=False)
    return texts, hint, image_examples, image_hint


def pick_text_example(sample):
    """The clicked example's text for the text box (the Dataset passes the sample's values)."""
    return sample[0] if sample else gr.update()


def _refresh(runs_dir: Path, current: str | None):
    update = model_choices(runs_dir, current)
    has_runs = bool(update.get("choices"))
    return update, gr.update(visible=not has_runs)


def build(ctx: AppContext) -> None:
    """Build the Prediction tab inside the current gr.Tab; registers prediction.model / prediction.revision."""
    runs = finished_runs(ctx.runs_dir)
    empty = gr.Markdown(empty_state(ctx.runs_dir), visible=not runs, label="empty state", elem_id="predict-empty")
    with gr.Row(equal_height=True):
        model = gr.Dropdown(runs, value=runs[0][1] if runs else None, allow_custom_value=True, label="Model",
                            info="A finished run, or type a Hub id (user/name)", scale=4, elem_id="predict-model")
        revision = gr.Textbox("main", label="Revision", info="Hub branch, tag or commit", scale=1,
                              elem_id="predict-revision")
        # in a column of its own: model_info shows or hides the column, a layout block, so /model_info's API
        # answer stays the info text alone
        with gr.Column(scale=1, min_width=160) as precision_col:
            precision = gr.Dropdown(precision_choices(), value="auto", label="Precision",
                                    info="auto: fastest that matches fp32", elem_id="predict-precision")
        refresh = gr.Button("Refresh runs", scale=0, size="sm")
    info = gr.Markdown(label="model info", elem_id="predict-model-info")
    with gr.Group(visible=True) as text_group:
        text = gr.Textbox(lines=5, label="Text", placeholder="Type or paste text to classify", elem_id="predict-text")
        with gr.Row():
            go = gr.Button("Predict", variant="primary", elem_id="predict-button")
            gr.ClearButton([text])
        label = heads_view.prediction_label(num_top_classes=5, label="Prediction", elem_id="predict-label")
        note = gr.Markdown(label="details", elem_id="predict-note")
        explain_view.build_text(ctx.demo, model, revision, text, label)  # /explain: word attributions
        text_examples = gr.Dataset(components=["textbox", "textbox"], headers=["Text", "True label"], samples=[],
                                   label="Examples from this run's validation data (click one to fill the text box)",
                                   visible=False, samples_per_page=10, elem_id="predict-examples")
        text_hint = gr.Markdown(visible=False, elem_id="predict-examples-hint")
    limits = {"concurrency_limit": CONCURRENCY, "concurrency_id": "predict"}
    image = predict_images.build(model, revision, limits, ctx.demo)

    with gr.Column() as text_tools:  # file batches and comparisons read text: hidden for image models
        with gr.Accordion("Batch: classify a file", open=False):
            gr.Markdown("Upload a `.csv`, `.jsonl` or `.parquet` file; get it back with `predicted_label` and `score` "
                        "columns. Large files are processed in chunks.")
            with gr.Row():
                file_in = gr.File(file_types=FILE_TYPES, label="Input file", elem_id="predict-file-in")
                with gr.Column():
                    column = gr.Textbox(label="Text column", placeholder="empty: 'text' or the longest text column")
                    go_file = gr.Button("Classify file", variant="primary", elem_id="predict-file-button")
                file_out = gr.File(label="Predictions file", interactive=False, elem_id="predict-file-out")
            file_note = gr.Markdown(label="summary", elem_id="predict-file-note")
            # hidden until a file is classified: an empty table would show the placeholder headers "1 2 3"
            with gr.Column(visible=False, elem_id="predict-file-preview-column") as preview_col:
                preview = gr.Dataframe(label="Preview", interactive=False, wrap=True, max_height=360,
                                       max_chars=PREVIEW_SHOWN, pinned_columns=len(PREVIEW_FIRST),
                                       column_widths=["150px", "90px"],  # the pinned pair; the rest size to content
                                       elem_id="predict-file-preview")

        with gr.Accordion("Compare two models on the same text", open=False):
            with gr.Row():
                model_b = gr.Dropdown(runs, value=runs[1][1] if len(runs) > 1 else None, allow_custom_value=True,
                                      label="Model B", info="compared with the model picked above (A)", scale=4)
                revision_b = gr.Textbox("main", label="Revision B", scale=1)
            go_compare = gr.Button("Compare", elem_id="compare-button")
            with gr.Row():
                label_a = heads_view.prediction_label(num_top_classes=5, label="Model A")
                label_b = heads_view.prediction_label(num_top_classes=5, label="Model B")
            compare_note = gr.Markdown(label="details")

    ctx.components.update({"prediction.model": model, "prediction.revision": revision,
                           "prediction.model_b": model_b})
    # each panel shows the last action's result only: a failure empties the result and puts its line in the note
    for event, name in ((go.click, "predict"), (text.submit, "predict_submit")):
        done = event(predict, [text, model, revision, precision], [label, note], api_name=name, **limits)
        show_errors(done, predict, note, reset=lambda: (None,), outputs=[label])
    done = go_compare.click(compare, [text, model, revision, model_b, revision_b, precision],
                            [label_a, label_b, compare_note], api_name="compare", **limits)
    show_errors(done, compare, compare_note, reset=lambda: (None, None), outputs=[label_a, label_b])
    done = go_file.click(predict_file, [file_in, model, revision, column, precision],
                         [file_out, preview, file_note, preview_col], api_name="predict_file", concurrency_limit=2,
                         concurrency_id="predict_file")
    show_errors(done, predict_file, file_note, reset=lambda: (None, None, gr.update(visible=False)),
                outputs=[file_out, preview, preview_col])
    kind = gr.State(None)  # the picked model's input kind, from model_info to model_examples (not in the API)
    widgets = [info, text_group, image["group"], image["sketch_col"], text_tools, precision_col, kind]
    shown_examples = [text_examples, text_hint, image["examples"], image["examples_hint"]]
    # a clicked example is predicted at once: the panel below never shows the previous text's answer
    picked = text_examples.click(pick_text_example, [text_examples], [text], api_name="pick_text_example",
                                 show_progress="hidden")
    done = picked.then(predict, [text, model, revision, precision], [label, note], api_name="predict_example",
                       api_visibility="private", **limits)
    show_errors(done, predict, note, reset=lambda: (None,), outputs=[label])
    # the examples follow the info: a Hub id's kind is known once its config.json is read
    model.change(model_info, [model, revision], widgets, api_name="model_info").then(
        None, js=predict_images.SELECT_BRUSH_JS, api_name="select_brush", api_visibility="private").then(
        model_examples, [model, kind], shown_examples, api_name="model_examples")

    def refresh_fn(current):
        return _refresh(ctx.runs_dir, current)

    refresh.click(refresh_fn, [model], [model, empty], api_name="list_models")
    if ctx.tabs is not None:  # coming back to this tab (or sent here by "Open in Prediction"): runs finished since
        ctx.tabs.change(refresh_fn, [model], [model, empty], api_name="list_models_on_tab",
                        api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:  # a run finished since the server started shows up on page load
        ctx.demo.load(refresh_fn, [model], [model, empty], api_name="list_models_on_load")
        ctx.demo.load(model_info, [model, revision], widgets, api_name="model_info_on_load").then(
            None, js=predict_images.SELECT_BRUSH_JS, api_name="select_brush_on_load", api_visibility="private").then(
            model_examples, [model, kind], shown_examples, api_name="model_examples_on_load")
