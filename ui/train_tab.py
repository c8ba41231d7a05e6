"""The Fine-tuning tab: pick model and data, check, start, watch, cancel/resume, read the results.

Training runs as a subprocess (engine.runs.jobs) started with exactly the command shown; the tab only reads the run
directory, refreshed by a gr.Timer, so closing the browser never stops training and any page reattaches.

One source of truth: every widget of the left column is an input of `_plan()`, which turns them into the TrainConfig and
run name a Start would use. The live command / config.yaml preview, Check and Start all call it, and Check and Start
then run the same engine checks (`engine.training.preflight.check_run`), so Start refuses exactly what Check refuses,
with the same lines. The uploaded file is state of its own, reset when the upload is cleared or refused. Results of
actions go to one message panel that keeps them until the next action.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from engine import tasks
from engine.config import DEFAULT_MODEL, ConfigError
from engine.data import BUNDLED, DATA_EXTENSIONS
from engine.runs.jobs import JobError, JobManager
from engine.tasks.image_classification.data import ARCHIVES
from engine.training.launch import accelerate_configs, command_for, display_command, place
from ui import base_models, forms, run_panel, search_panel
from ui.common import SessionValue, hide_server_paths, message, show_errors, ui_errors
from ui.train_upload import DEFAULT_COLUMNS, missing_line, stored_path, wire_upload

TAB_ID = "train"
# fields with their own widgets above the generated form, or managed by the job runner
MANAGED = ("model_name_or_path", "dataset_name", "train_file", "text_column", "label_column", "output_dir",
           "overwrite_output_dir", "resume_from_checkpoint")
HINTED = ("class_weights",)  # fields the pre-flight's warnings may propose a value for
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
    return [DEFAULT_MODEL, *base_models.SCRATCH_MODELS, *done]


def forms_names() -> list[str]:
    return [s.name for s in forms.field_specs(exclude=MANAGED)]


def build(runs_dir=None, tabs: gr.Tabs | None = None, predict_model: gr.components.Component | None = None,
          predict_tab_id: str | int = "predict") -> dict:
    """Render the tab's contents (call inside `gr.Tab`). With `tabs` and the Prediction tab's model picker,
    'Open in Prediction tab' switches tabs and selects the run's model. Returns the components by name."""
    mgr = manager(runs_dir)
    c: dict = {}
    with gr.Row():
        with gr.Column(scale=3):
            _data_widgets(c, mgr)
            gr.Markdown("### 2 · Hyperparameters")
            c["hints"] = dict.fromkeys(HINTED)  # Check's advice shows under these fields
            c["form"] = forms.build_form(exclude=MANAGED, hints=c["hints"])
            search_panel.build_settings(c)  # the Search mode: keys to vary over this form's config
            _run_widgets(c)
        with gr.Column(scale=4):
            with gr.Column() as c["run_column"]:
                c.update(run_panel.build(mgr))
            search_panel.build_view(c, mgr)
    _wire(c, mgr)
    run_panel.wire(c, mgr)
    if predict_model is not None and tabs is not None:
        run_panel.wire_open_in_predict(c, mgr, tabs, predict_model, predict_tab_id)
    return c


def _data_widgets(c: dict, mgr: JobManager) -> None:
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
                          file_types=[*DATA_EXTENSIONS, *ARCHIVES])
    c["hub_id"] = gr.Textbox(label="Hub dataset id", visible=False, placeholder="e.g. imdb", elem_id="train-hub-id")
    with gr.Row(visible=_data_task(SOURCES[0], next(iter(BUNDLED)), None).maps_columns) as c["columns"]:
        c["text_col"] = gr.Dropdown(DEFAULT_COLUMNS, value="text", label="text column", allow_custom_value=True,
                                    elem_id="train-text-col", info="columns holding text")
        c["label_col"] = gr.Dropdown(DEFAULT_COLUMNS, value="label", label="label column", allow_custom_value=True,
                                     elem_id="train-label-col",
                                     info="the classes to learn; lists: multi-label, decimals: regression "
                                          "(Data: problem_type, label_separator)")


def _run_widgets(c: dict) -> None:
    configs = accelerate_configs()
    usable = [n for n, why in configs.items() if why.startswith("ok")]
    with gr.Row():
        c["run_name"] = gr.Textbox(label="run name", placeholder="(automatic: <data>-<n>)", elem_id="train-run-name")
        ok = ", ".join(f"{n} ({why})" for n, why in configs.items() if n in usable)
        others = "; ".join(f"{n} ({why})" for n, why in configs.items() if n not in usable)
        c["accel"] = gr.Dropdown(usable, value=usable[0], label="accelerate config", elem_id="train-accel",
                                 info=f"This machine can run: {ok}." + (f" Not here: {others}." if others else ""))
    with gr.Row():
        c["check"] = gr.Button("Check data and estimate", elem_id="train-check")
        c["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
    c["problems"] = gr.Markdown(elem_id="train-problems")  # the message panel: the last action's result
    c["command"] = gr.Code(label="command (run from the repository root)", language="shell",
                           elem_id="train-command", interactive=False)
    with gr.Accordion("Pre-flight report (optional: measures a few real steps)", open=True):
        c["report"] = gr.Markdown(elem_id="train-report")
        # hidden until a Check fills them: an empty table would show the placeholder headers "1 2 3"
        with gr.Row(visible=False, elem_id="train-tables") as c["tables"]:
            c["first_rows"] = gr.Dataframe(label="first rows", elem_id="train-first-rows", wrap=True)
            c["label_counts"] = gr.Dataframe(label="label counts", elem_id="train-label-counts")
    with gr.Accordion("config.yaml", open=False, elem_id="train-yaml-accordion"):
        c["yaml"] = gr.Code(label="config.yaml", language="yaml", elem_id="train-yaml", interactive=False)
        c["download"] = gr.DownloadButton("Download config.yaml", elem_id="train-download")
    c["estimate"] = gr.State(None)  # the last pre-flight's whole-run estimate, with the config it measured
    c["check_warnings"] = gr.State([])  # Check's warnings, shown under the fields they name


# ------------------------------------------------------------------------------------------------------------
# the one derivation: widgets -> (TrainConfig, run name)


def _values(uploaded: str | None, base_model, source, bundled, hub_id, text_col, label_col, *form_vals) -> dict:
    """All widget values, and the session's stored upload, -> config values (the generated form plus the
    hand-placed data widgets)."""
    base_models.refuse_user_code(base_model)  # module:Class runs the user's code: command line only
    values = forms.form_values(list(forms_names()), form_vals)
    columns = _data_task(source, bundled, uploaded).maps_columns  # image folders name their own classes
    values.update(model_name_or_path=(base_model or "").strip() or None, dataset_name=None, train_file=None,
                  text_column=(text_col or None) if columns else None,
                  label_column=(label_col or None) if columns else None)
    if source == SOURCES[0]:
        values["dataset_name"] = bundled
    elif source == SOURCES[1]:
        if not stored_path(uploaded):
            raise ConfigError(missing_line(uploaded))
        values["train_file"] = uploaded
    else:
        values["dataset_name"] = (hub_id or "").strip() or None
    if source != SOURCES[1]:
        for key in ("validation_file", "test_file"):
            values.pop(key, None)
    return values


def _data_task(source, bundled, uploaded):
    """The task that will read the chosen data (engine.tasks, from the names alone): it decides whether the user
    maps columns."""
    if source == SOURCES[0]:
        return tasks.for_data(dataset_name=bundled)
    return tasks.for_data(train_file=stored_path(uploaded)) if source == SOURCES[1] else tasks.for_data()


def _plan(mgr: JobManager, uploaded, run_name, *args):
    """(config placed in the run directory it will get, that run's name). ConfigError/JobError on bad input."""
    cfg = forms.to_config(_values(uploaded, *args))
    name = mgr.propose_name(cfg, run_name)
    return place(cfg, mgr.runs_dir / name), name


def _checked(mgr: JobManager, uploaded, run_name, *args):
    """What Check and Start both run before doing anything: the plan, the config's validation and the engine's
    data and model checks. Returns (cfg, name, engine.training.preflight.Checked)."""
    from engine.modeling import check_before_launch
    from engine.training.preflight import check_run

    cfg, name = _plan(mgr, uploaded, run_name, *args)
    cfg.validate(check_paths=True)
    check_before_launch(cfg.model_name_or_path)
    return cfg, name, check_run(cfg)


def _problems_md(e: ConfigError | JobError) -> str:
    problems = e.problems if isinstance(e, ConfigError) else [str(e)]
    lines = []
    for p in map(hide_server_paths, problems):
        field, _, rest = p.partition(":")
        lines.append(f"- `{field}`:{rest}" if rest else f"- {p}")
    return "**Please fix before starting:**\n\n" + "\n".join(lines)


def _estimate_key(cfg) -> str:
    """The config a measurement describes (the run's own folder aside: the same settings cost the same)."""
    return cfg.to_yaml().replace(cfg.output_dir, "")


# ------------------------------------------------------------------------------------------------------------
# handlers


def _preview(mgr: JobManager, uploaded, accel, run_name, *args):
    """(command, config.yaml) of what Start would run now; unfinished input shows as comment lines."""
    try:
        cfg, name = _plan(mgr, uploaded, run_name, *args)
    except (ConfigError, JobError, gr.Error) as e:
        lines = e.problems if isinstance(e, ConfigError) else [str(getattr(e, "message", e))]
        shown = "".join(f"# - {hide_server_paths(p)}\n" for p in lines)
        return "# not ready yet:\n" + shown, "# not ready yet:\n" + shown
    argv, env = command_for(mgr.runs_dir / name, accel)
    return display_command(argv, env), cfg.to_yaml()


def _wire(c, mgr: JobManager) -> None:
    # the stored upload of each session (what Check, Start and the preview train on), or ui.train_upload.Refused
    uploads = SessionValue()
    form_inputs = [c["form"][n] for n in forms_names()]
    data_inputs = [c["base_model"], c["source"], c["bundled"], c["hub_id"], c["text_col"], c["label_col"]]
    plan_inputs = [c["run_name"], c["accel"], *data_inputs, *form_inputs]
    # the Search mode's trials start from the config these same widgets give
    search_panel.wire(c, mgr, [c["accel"], *data_inputs, *form_inputs],
                      lambda *values: _plan(mgr, uploads.get(), None, *values)[0])

    def on_source(source):
        return (gr.update(visible=source == SOURCES[0]), gr.update(visible=source == SOURCES[1]),
                gr.update(visible=source == SOURCES[2]))

    c["source"].change(on_source, c["source"], [c["bundled"], c["upload"], c["hub_id"]], api_name="train_source")
    c["base_model"].change(base_models.learning_rate_for, [c["base_model"], c["form"]["learning_rate"]],
                           c["form"]["learning_rate"], api_name="train_suggest_lr", show_progress="hidden")

    def data_kind(source, bundled):
        """The column pickers show when the data's task maps columns (image folders name their own classes)."""
        return gr.update(visible=_data_task(source, bundled, uploads.get()).maps_columns)

    def preview(run_name, accel, *args):
        return _preview(mgr, uploads.get(), accel, run_name, *args)

    def after_data(dependency, name):
        """Once the stored data changed: the column pickers' visibility and the preview follow."""
        dependency.then(data_kind, [c["source"], c["bundled"]], c["columns"], api_name=f"{name}_data_kind",
                        show_progress="hidden").then(preview, plan_inputs, [c["command"], c["yaml"]],
                                                     api_name=f"{name}_preview", show_progress="hidden")

    gr.on([c["source"].change, c["bundled"].change], data_kind, [c["source"], c["bundled"]], c["columns"],
          api_name="train_data_kind", show_progress="hidden")
    gr.on([x.change for x in plan_inputs], preview, plan_inputs, [c["command"], c["yaml"]],
          api_name="train_preview", show_progress="hidden", trigger_mode="always_last")
    if (demo := gr.context.Context.root_block) is not None:
        demo.load(preview, plan_inputs, [c["command"], c["yaml"]], api_name="train_preview_on_load",
                  show_progress="hidden")
    wire_upload(c, mgr, uploads, after_data)
    # after a Start the command box keeps the started run's exact command; the next change of the form previews
    # the next run again
    _wire_check_and_start(c, mgr, uploads, plan_inputs)


def _wire_check_and_start(c: dict, mgr: JobManager, uploads: SessionValue, plan_inputs: list):
    buttons = [c["check"], c["start"]]

    def lock():
        """While Check or Start runs, neither can be clicked, and the last action's message is gone."""
        return gr.update(interactive=False), gr.update(interactive=False), ""

    def unlock():
        return gr.update(interactive=True), gr.update(interactive=True)

    check_outputs = [c["problems"], c["report"], c["first_rows"], c["label_counts"], c["command"], c["yaml"],
                     c["download"]]

    @ui_errors(toast=False)
    def check(run_name, accel, *args, progress=gr.Progress()):
        import pandas as pd

        from engine.training.preflight import preflight, report_markdown

        try:
            cfg, name, checked = _checked(mgr, uploads.get(), run_name, *args)
            rep = preflight(cfg, world_size=2 if accel == "cpu_ddp.yaml" else 1, timed_steps=1,
                            progress=lambda f, d="": progress(f, desc=d), checked=checked)
        except (ConfigError, JobError) as e:
            return _problems_md(e), "", None, None, gr.update(), gr.update(), None, None, [], gr.update(visible=False)
        argv, env = command_for(mgr.runs_dir / name, accel)
        yaml_text = cfg.to_yaml()
        path = Path(tempfile.mkdtemp(prefix="hubtune-cfg-")) / "config.yaml"
        path.write_text(yaml_text)
        counts = pd.DataFrame({"label": list(rep["label_counts"]), "count": list(rep["label_counts"].values())})
        long = rep["whole_run_seconds"] > 600
        note = message(f"the data and settings are valid; run `{name}` would take about "
                       f"{_minutes(rep['whole_run_seconds'])} here", "warn" if long else "ok")
        estimate = {"key": _estimate_key(cfg), "seconds": rep["whole_run_seconds"], "steps": rep["total_steps"]}
        return (note, report_markdown(rep), pd.DataFrame(rep["first_rows"]), counts, display_command(argv, env),
                yaml_text, str(path), estimate, rep["warnings"], gr.update(visible=True))

    def show_hints(warnings):
        updates = [forms.hint_update(field, warnings or []) for field in c["hints"]]
        return updates[0] if len(updates) == 1 else updates  # gradio reads one output's list as its value

    dep = (c["check"].click(lock, None, [*buttons, c["problems"]], api_name="train_check_lock", queue=False,
                            show_progress="hidden")
           .then(check, plan_inputs, [*check_outputs, c["estimate"], c["check_warnings"], c["tables"]],
                 api_name="train_check",
                 show_progress_on=[c["problems"], c["report"]]))
    dep.then(unlock, None, buttons, api_name="train_check_unlock", queue=False, show_progress="hidden")
    # the hints follow Check in their own step, so /train_check's outputs stay what API clients already read
    dep.then(show_hints, c["check_warnings"], list(c["hints"].values()), api_name="train_check_hints", queue=False,
             show_progress="hidden")
    show_errors(dep, check, c["problems"])

    @ui_errors(toast=False)
    def start(run_name, accel, estimate, *args):
        try:
            cfg, name, checked = _checked(mgr, uploads.get(), run_name, *args)
            # a typed name is started under exactly that name; an automatic one moves on if taken meanwhile
            info = mgr.submit(cfg, accel, name=name, exact=bool((run_name or "").strip()))
        except (ConfigError, JobError) as e:
            return (_problems_md(e), gr.update(), gr.update(), gr.update(), gr.update(), gr.skip(),
                    *[gr.skip()] * len(run_panel.view_outputs(c)))
        cfg_path = Path(info["dir"]) / "config.yaml"
        where = "started" if info["state"] != "queued" else f"queued at position {info['queue_position']}"
        cost = (f"; about {_minutes(estimate['seconds'])} by the pre-flight's measure"
                if estimate and estimate.get("key") == _estimate_key(cfg) else
                "; run the pre-flight (Check) to know how long it takes")
        return (message(f"run `{info['name']}` {where}: {len(checked.splits.train):,} training examples{cost}"),
                info["command"], cfg_path.read_text(), str(cfg_path),
                gr.update(choices=[r["name"] for r in mgr.every_run()], value=info["name"]), info["name"],
                *run_panel.show_new_run(c, info))

    # the new run is shown from now on, by refreshes queued before Start too (see run_panel.build)
    start_outputs = [c["problems"], c["command"], c["yaml"], c["download"], c["run"], c["picked"],
                     *run_panel.view_outputs(c)]
    start_inputs = [plan_inputs[0], plan_inputs[1], c["estimate"], *plan_inputs[2:]]
    dep = (c["start"].click(lock, None, [*buttons, c["problems"]], api_name="train_start_lock", queue=False,
                            show_progress="hidden")
           .then(start, start_inputs, start_outputs, api_name="train_start", show_progress_on=c["problems"]))
    dep.then(unlock, None, buttons, api_name="train_start_unlock", queue=False, show_progress="hidden")
    show_errors(dep, start, c["problems"])
    return dep


def _minutes(seconds: float) -> str:
    from engine.training.preflight import _duration

    return _duration(seconds)


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
