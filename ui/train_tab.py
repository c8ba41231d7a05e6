"""The Fine-tuning tab: pick model and data, check, start, watch, cancel/resume, read the results.

Training runs as a subprocess (engine.jobs) started with exactly the command shown; the tab only reads the run
directory, refreshed by a gr.Timer, so closing the browser never stops training and any page reattaches.
Validation uses the trainer's own `TrainConfig.validate()`, so bad input is reported here before launch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from engine.config import DEFAULT_MODEL, ConfigError
from engine.data import BUNDLED
from engine.jobs import JobError, JobManager, accelerate_configs, command_for, display_command, save_upload, slug
from ui import forms, run_panel, train_images
from ui.common import ui_errors

TAB_ID = "train"
# fields with their own widgets above the generated form, or managed by the job runner
MANAGED = ("model_name_or_path", "dataset_name", "train_file", "text_column", "label_column", "output_dir",
           "overwrite_output_dir", "resume_from_checkpoint")
SOURCES = ("Bundled dataset", "Upload a file", "Hub dataset id")
_MANAGERS: dict[Path, JobManager] = {}


def manager(runs_dir=None) -> JobManager:
    """One JobManager (and scheduler thread) per runs directory in this process."""
    mgr = JobManager(runs_dir)
    if mgr.runs_dir not in _MANAGERS:
        mgr.start_scheduler()
        _MANAGERS[mgr.runs_dir] = mgr
    return _MANAGERS[mgr.runs_dir]


def _model_choices(mgr: JobManager) -> list[str]:
    done = [r["dir"] + "/model" for r in mgr.list_runs() if r["state"] == "done"]
    return [DEFAULT_MODEL, *train_images.SCRATCH_MODELS, *done]


def build(runs_dir=None, tabs: gr.Tabs | None = None, predict_model: gr.components.Component | None = None,
          predict_tab_id: str | int = "predict") -> dict:
    """Render the tab's contents (call inside `gr.Tab`). With `tabs` and the Prediction tab's model picker,
    'Open in Prediction tab' switches tabs and selects the run's model. Returns the components by name."""
    mgr = manager(runs_dir)
    gpus_note = ", ".join(f"{n} ({why})" for n, why in accelerate_configs().items() if why.startswith("ok"))
    c: dict = {}
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### 1 · Base model and data")
            c["base_model"] = gr.Dropdown(_model_choices(mgr), value=DEFAULT_MODEL, allow_custom_value=True,
                                          label="base model", elem_id="train-base-model",
                                          info="The offline default (text), mlp / vit-tiny (images, trained from "
                                               "scratch), a Hub id, or a finished run's model/.")
            c["source"] = gr.Radio(list(SOURCES), value=SOURCES[0], label="dataset source", elem_id="train-source")
            c["bundled"] = gr.Dropdown(list(BUNDLED), value=next(iter(BUNDLED)), label="bundled dataset",
                                       info="; ".join(d for _, d in BUNDLED.values()), elem_id="train-bundled")
            c["upload"] = gr.File(label="data file (.csv .json .jsonl .parquet), or a .zip of images with one folder "
                                        "per class", visible=False, elem_id="train-upload",
                                  file_types=[".csv", ".json", ".jsonl", ".parquet", *train_images.IMAGE_ARCHIVES])
            c["hub_id"] = gr.Textbox(label="Hub dataset id", visible=False, placeholder="e.g. imdb",
                                     elem_id="train-hub-id")
            c["data_path"] = gr.State(None)
            with gr.Row(visible=not train_images.is_image_bundled(next(iter(BUNDLED)))) as c["columns"]:
                c["text_col"] = gr.Dropdown(["text", "label"], value="text", label="text column",
                                            allow_custom_value=True, elem_id="train-text-col")
                c["label_col"] = gr.Dropdown(["text", "label"], value="label", label="label column",
                                             allow_custom_value=True, elem_id="train-label-col")
            gr.Markdown("### 2 · Hyperparameters")
            c["form"] = forms.build_form(exclude=MANAGED)
            with gr.Row():
                c["run_name"] = gr.Textbox(label="run name", placeholder="(automatic)", elem_id="train-run-name")
                usable = [n for n, why in accelerate_configs().items() if why.startswith("ok")]
                c["accel"] = gr.Dropdown(usable, value=usable[0], label="accelerate config", elem_id="train-accel",
                                         info=f"This machine can run: {gpus_note}.")
            with gr.Row():
                c["check"] = gr.Button("Check data and estimate", elem_id="train-check")
                c["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
            c["problems"] = gr.Markdown(elem_id="train-problems")
            with gr.Accordion("Pre-flight report", open=True):
                c["report"] = gr.Markdown(elem_id="train-report")
                with gr.Row():
                    c["first_rows"] = gr.Dataframe(label="first rows", elem_id="train-first-rows", wrap=True)
                    c["label_counts"] = gr.Dataframe(label="label counts", elem_id="train-label-counts")
            c["command"] = gr.Code(label="command (run from the repository root)", language="shell",
                                   elem_id="train-command", interactive=False)
            c["yaml"] = gr.Code(label="config.yaml", language="yaml", elem_id="train-yaml", interactive=False)
            c["download"] = gr.DownloadButton("Download config.yaml", elem_id="train-download")
        with gr.Column(scale=4):
            c.update(run_panel.build(mgr))
    _wire(c, mgr, tabs, predict_model, predict_tab_id)
    return c


def _values(mgr, base_model, source, bundled, data_path, hub_id, text_col, label_col, *form_vals) -> dict:
    """All widget values -> config values (the generated form plus the hand-placed data widgets)."""
    train_images.refuse_user_code(base_model)  # module:Class runs the user's code: command line only
    values = forms.form_values(list(forms_names()), form_vals)
    images = train_images.is_image_data(SOURCES.index(source) if source in SOURCES else -1, bundled, data_path)
    values.update(model_name_or_path=(base_model or "").strip() or None, dataset_name=None, train_file=None,
                  text_column=None if images else text_col or None, label_column=None if images else label_col or None)
    if source == SOURCES[0]:
        values["dataset_name"] = bundled
    elif source == SOURCES[1]:
        if not data_path:
            raise ConfigError("train_file: no file uploaded yet; upload a .csv, .json, .jsonl or .parquet file, or a "
                              ".zip of images")
        values["train_file"] = data_path
    else:
        values["dataset_name"] = (hub_id or "").strip() or None
    if source != SOURCES[1]:
        for key in ("validation_file", "test_file"):
            values.pop(key, None)
    values["output_dir"] = str(mgr.runs_dir / "preview")  # replaced by the real run directory at Start
    return values


def forms_names() -> list[str]:
    return [s.name for s in forms.field_specs(exclude=MANAGED)]


def _config(mgr, *args):
    values = _values(mgr, *args)
    cfg = forms.to_config(values)
    cfg.validate(check_paths=True)
    return cfg


def _problems_md(e: ConfigError) -> str:
    return "**Please fix before starting:**\n\n" + "\n".join(f"- `{p.split(':', 1)[0]}`:{p.split(':', 1)[1]}"
                                                             if ":" in p else f"- {p}" for p in e.problems)


def _wire(c, mgr: JobManager, tabs, predict_model, predict_tab_id) -> None:
    form_inputs = [c["form"][n] for n in forms_names()]
    data_inputs = [c["base_model"], c["source"], c["bundled"], c["data_path"], c["hub_id"], c["text_col"],
                   c["label_col"]]

    def on_source(source):
        return (gr.update(visible=source == SOURCES[0]), gr.update(visible=source == SOURCES[1]),
                gr.update(visible=source == SOURCES[2]))

    c["source"].change(on_source, c["source"], [c["bundled"], c["upload"], c["hub_id"]], api_name="train_source")
    c["base_model"].change(train_images.learning_rate_for, [c["base_model"], c["form"]["learning_rate"]],
                           c["form"]["learning_rate"], api_name="train_suggest_lr", show_progress="hidden")

    @ui_errors
    def on_upload(file):
        if not file:
            return None, gr.update(), gr.update(), ""
        saved = None
        try:
            saved = save_upload(file, mgr.runs_dir, Path(file).name)
            if saved.suffix.lower() in train_images.IMAGE_ARCHIVES:  # images: classes come from the folder names
                return str(saved), gr.update(), gr.update(), train_images.describe_archive(saved)
            from engine.preflight import columns

            cols = columns(str(saved))
        except (JobError, ConfigError) as e:
            if saved is not None:
                saved.unlink(missing_ok=True)  # an unreadable upload is not kept in runs/uploads
            raise gr.Error(str(e)) from None
        text = next((x for x in ("text", "sentence", "review", "content") if x in cols), cols[0])
        label = next((x for x in ("label", "labels", "category") if x in cols), cols[-1])
        return (str(saved), gr.update(choices=cols, value=text), gr.update(choices=cols, value=label),
                f"Uploaded `{saved.name}` with columns: {', '.join(cols)}")

    c["upload"].upload(on_upload, c["upload"], [c["data_path"], c["text_col"], c["label_col"], c["problems"]],
                       api_name="train_upload")

    def data_kind(source, bundled, data_path):
        """Images need no column mapping: hide the text/label column pickers for image data."""
        index = SOURCES.index(source) if source in SOURCES else -1
        return gr.update(visible=not train_images.is_image_data(index, bundled, data_path))

    gr.on([c["source"].change, c["bundled"].change, c["data_path"].change], data_kind,
          [c["source"], c["bundled"], c["data_path"]], c["columns"], api_name="train_data_kind")

    @ui_errors
    def check(run_name, accel, *args, progress=gr.Progress()):
        try:
            cfg = _config(mgr, *args)
        except ConfigError as e:
            return _problems_md(e), "", None, None, "", "", None
        from engine.preflight import preflight, report_markdown

        world = 2 if accel == "cpu_ddp.yaml" else 1
        try:
            rep = preflight(cfg, world_size=world, timed_steps=1, progress=lambda f, d="": progress(f, desc=d))
        except ConfigError as e:
            return _problems_md(e), "", None, None, "", "", None
        planned = mgr.runs_dir / slug(run_name or "<automatic name>")
        argv, env = command_for(planned, accel)
        cfg.output_dir = str(planned)
        yaml_text = cfg.to_yaml()
        path = Path(tempfile.mkdtemp(prefix="hubtune-cfg-")) / "config.yaml"
        path.write_text(yaml_text)
        import pandas as pd

        counts = pd.DataFrame({"label": list(rep["label_counts"]), "count": list(rep["label_counts"].values())})
        return ("✅ config is valid", report_markdown(rep), pd.DataFrame(rep["first_rows"]), counts,
                display_command(argv, env), yaml_text, str(path))

    c["check"].click(check, [c["run_name"], c["accel"], *data_inputs, *form_inputs],
                     [c["problems"], c["report"], c["first_rows"], c["label_counts"], c["command"], c["yaml"],
                      c["download"]], api_name="train_check")

    @ui_errors
    def start(run_name, accel, *args):
        try:
            cfg = _config(mgr, *args)
            info = mgr.submit(cfg, accel, name=run_name or None)
        except ConfigError as e:
            return _problems_md(e), gr.update(), gr.update(), gr.update(), gr.update()
        except JobError as e:
            raise gr.Error(str(e)) from None
        cfg_path = Path(info["dir"]) / "config.yaml"
        where = "started" if info["state"] != "queued" else f"queued at position {info['queue_position']}"
        return (f"✅ run `{info['name']}` {where}", info["command"], cfg_path.read_text(), str(cfg_path),
                gr.update(choices=[r["name"] for r in mgr.list_runs()], value=info["name"]))

    c["start"].click(start, [c["run_name"], c["accel"], *data_inputs, *form_inputs],
                     [c["problems"], c["command"], c["yaml"], c["download"], c["run"]], api_name="train_start")

    run_panel.wire(c, mgr)

    if predict_model is not None and tabs is not None:
        run_panel.wire_open_in_predict(c, mgr, tabs, predict_model, predict_tab_id)


def build_tab(ctx) -> None:
    """app.py's TABS entry: build inside the current gr.Tab and, once every tab exists, wire the
    Prediction-tab button to ctx.components["prediction.model"] and ctx.tabs."""
    c = build(ctx.runs_dir)

    def link(ctx):
        picker = ctx.components.get("prediction.model")
        if picker is not None and ctx.tabs is not None:
            run_panel.wire_open_in_predict(c, manager(ctx.runs_dir), ctx.tabs, picker, "prediction", ctx.runs_dir)

    ctx.on_built.append(link)


def standalone(runs_dir=None) -> gr.Blocks:
    """The tab on its own page (development, and tests that do not need the whole app)."""
    with gr.Blocks(title="hubtune · Fine-tuning") as demo:
        with gr.Tabs(selected=TAB_ID):
            with gr.Tab("Fine-tuning", id=TAB_ID):
                build(runs_dir)
    return demo


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    standalone().launch()
