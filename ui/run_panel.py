"""The Fine-tuning tab's right column: every run, the selected run's live view, its results, Cancel/Resume.

It only reads run directories (refreshed by a gr.Timer through the job runner), so a reloaded page reattaches to a
running run and any number of pages show the same runs. Each page keeps what it last drew (`drawn`, per session):
charts, log and results are redrawn only when their files changed, so an idle page costs a few file stats a tick.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from engine.config import ConfigError
from engine.runs.jobs import JobError, JobManager
from ui import hub_panel, run_view
from ui.common import SessionValue, message, show_errors, ui_errors

REFRESH_SECONDS = 2.0  # charts, log and results (redrawn only when the run's files changed)
STATUS_SECONDS = 1.0  # progress line, phase and buttons: cheap, and a phase such as saving may last a second
ACTIVE = ("queued", "starting", "running")  # states Cancel applies to
RESUMABLE = ("cancelled", "failed")


def build(mgr: JobManager) -> dict:
    """Render the column (call inside a gr.Column); returns its components by name."""
    c: dict = {}
    gr.Markdown("### 3 · Runs")
    c["runs"] = gr.Dataframe(run_view.runs_table([]), label="all runs (click a row to show it)", interactive=False,
                             elem_id="train-runs", max_height=300, wrap=True,
                             column_widths=["19%", "14%", "12%", "20%", "22%", "13%"])
    with gr.Row(equal_height=True):
        # custom values: API clients name runs started after this page was built; handlers check every name
        c["run"] = gr.Dropdown([r["name"] for r in mgr.every_run()], value=None, label="show run",
                               allow_custom_value=True, elem_id="train-run", scale=3)
        # disabled until the refresh sees a run they apply to (the first tick comes within STATUS_SECONDS)
        c["cancel"] = gr.Button("Cancel", variant="secondary", interactive=False, elem_id="train-cancel", scale=1)
        c["resume"] = gr.Button("Resume", variant="secondary", interactive=False, elem_id="train-resume", scale=1)
    c["action_message"] = gr.Markdown(elem_id="run-message")
    c["progress"] = gr.HTML(run_view.progress_html(None), elem_id="train-progress")
    c["failure"] = gr.HTML(visible=False, elem_id="train-failure")
    with gr.Row():
        c["loss_plot"] = gr.Plot(show_label=False, elem_id="plot-loss", format="png")
        c["metric_plot"] = gr.Plot(show_label=False, elem_id="plot-metrics", format="png")
    with gr.Row():
        c["lr_plot"] = gr.Plot(show_label=False, elem_id="plot-lr", format="png")
        c["speed_plot"] = gr.Plot(show_label=False, elem_id="plot-speed", format="png")
    c["log"] = gr.HTML(run_view.log_html(None), elem_id="train-log", padding=True)
    with gr.Column(visible=False, elem_id="train-results") as c["results"]:
        gr.Markdown("#### Results on the validation set")
        c["warning"] = gr.Markdown(visible=False, elem_id="train-warning")
        c["metrics"] = gr.Dataframe(label="validation metrics", elem_id="train-metrics", interactive=False,
                                    column_widths=["55%", "45%"])
        # the PNG carries its own title; a label badge would cover it
        c["confusion"] = gr.Image(label="confusion matrix", show_label=False, type="filepath",
                                  elem_id="train-confusion", interactive=False, buttons=["download", "fullscreen"])
        c["per_class"] = gr.Dataframe(label="per-class report", elem_id="train-per-class", interactive=False,
                                      max_height=420)
        c["wrong"] = gr.Dataframe(label="misclassified validation examples", wrap=True, max_height=360,
                                  interactive=False, elem_id="train-wrong",
                                  column_widths=["19%", "19%", "9%", "53%"])
        c["wrong_images"] = gr.Gallery(label="misclassified validation images", visible=False, columns=3,
                                       height=560, object_fit="contain", allow_preview=True,
                                       elem_id="train-wrong-images")
        # shown once wired to a Prediction tab (app.py), hidden on the standalone page
        c["open_predict"] = gr.Button("Open model in the Prediction tab", variant="primary",
                                      elem_id="train-open-predict", visible=False)
        c["hub"] = hub_panel.build(c["run"], lambda name: Path(mgr.record(name)["dir"]))  # push the shown run
    c["drawn"] = gr.State({})  # per page: the file signatures its charts, log and results were drawn from
    # per page: the run last put in the picker by the user (or by Start). Gradio reads a State when the event runs,
    # the picker's value when it was queued: a tick queued before a pick carries the run the user left (or none),
    # and showing that would put it back on screen and in the picker, for good. Refreshes show `picked` once set.
    c["picked"] = gr.State(None)
    # per browser session, on the server: the run last chosen (a pick or a Start), read when a refresh *ends*. A
    # refresh already running when Start (or a pick) changed the run would otherwise draw the run it began with
    # over the new one, which stayed on screen until the next tick
    c["chosen"] = SessionValue()
    c["timer"] = gr.Timer(REFRESH_SECONDS)
    c["status_timer"] = gr.Timer(STATUS_SECONDS)
    return c


def _stamp(path: Path) -> tuple:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return ()


def _buttons(info: dict | None) -> tuple:
    """Cancel only for a run that can be stopped, Resume only for one that can go on; bright only when enabled.
    Only the job runner's own runs: a run trained from the shell or a search's trial is not this page's to stop."""
    state = info["state"] if info and info.get("origin", "app") == "app" else None
    can_cancel, can_resume = state in ACTIVE, state in RESUMABLE
    return (gr.update(interactive=can_cancel, variant="stop" if can_cancel else "secondary"),
            gr.update(interactive=can_resume, variant="primary" if can_resume else "secondary"))


def _results(info: dict, run_dir: Path) -> list:
    """Outputs of the results area: visibility, warning, tables, confusion image, gallery."""
    res = run_view.results(run_dir) if info["state"] == "done" else None
    if res is None:
        return [gr.update(visible=False), gr.update(visible=False), None, None, None,
                gr.update(value=None), gr.update(value=None, visible=False)]
    images, v = res["images"], res["view"]
    wrong_label = f"{v.mistakes} ({len(res['misclassified'])} of {res['total']})"
    line = res["warning"]
    warning = gr.update(value=message(f"**Not a useful classifier yet.** {line[0].upper()}{line[1:]}.", "warn")
                        if line else "", visible=bool(line))
    if images is None:
        wrong = gr.update(value=res["misclassified"], label=wrong_label, visible=True,
                          column_widths=list(v.mistake_widths))
        gallery = gr.update(value=None, visible=False)
    else:  # an image run: its mistakes as pictures; the table would only hold names like "mnist #2210"
        wrong = gr.update(value=None, visible=False)
        gallery = gr.update(value=run_view.gallery_items(images), visible=True,
                            label=f"misclassified validation images ({len(images)} shown of "
                                  f"{len(res['misclassified'])})")
    picture = run_view.confusion_png(run_dir)  # or the predicted-vs-true scatter plot of a regression run
    figure = gr.update(value=picture, visible=picture is not None)
    per_class = gr.update(value=res["per_class"], visible=v.per_class)
    return [gr.update(visible=True), warning, res["headline"], figure, per_class, wrong, gallery]


def _signature(info: dict | None) -> dict:
    """What each part of the view was drawn from: the run, its state and the size and time of its files."""
    if info is None:
        return {"curves": [None], "log": [None], "results": [None]}
    run_dir = Path(info["dir"])
    return {"curves": [info["name"], *_stamp(run_dir / "events.jsonl")],
            "log": [info["name"], *_stamp(run_dir / "train.log")],
            "results": [info["name"], info["state"], *_stamp(run_dir / "metrics.json")]}


def _status(info: dict | None) -> list:
    """The quick part of the view: progress line, failure panel, Cancel and Resume (no drawing)."""
    failure = run_view.failure_html(info)
    return [run_view.progress_html(info), gr.update(value=failure or "", visible=bool(failure)), *_buttons(info)]


def _drawings(info: dict | None, drawn: dict) -> tuple[list, dict]:
    """The charts, log and results of `info`, skipping parts whose files did not change since this page drew
    them (`drawn`); returns the outputs and the new signature."""
    run_dir = Path(info["dir"]) if info else None
    sig = _signature(info)
    out = []
    if sig["curves"] != drawn.get("curves"):
        cur = run_view.curves(run_dir)
        out += [cur["loss"], cur["metrics"], cur["lr"], cur["speed"]]
    else:
        out += [gr.skip()] * 4
    out.append(run_view.log_html(run_dir, (info or {}).get("origin")) if sig["log"] != drawn.get("log")
               else gr.skip())
    if sig["results"] != drawn.get("results"):
        out += _results(info or {"state": None}, run_dir)
    else:
        out += [gr.skip()] * 7
    return out, sig


def _drawing_outputs(c: dict) -> list:
    return [c["loss_plot"], c["metric_plot"], c["lr_plot"], c["speed_plot"], c["log"], c["results"], c["warning"],
            c["metrics"], c["confusion"], c["per_class"], c["wrong"], c["wrong_images"], c["drawn"]]


def view_outputs(c: dict) -> list:
    """The components that show one run: progress line, failure panel, Cancel, Resume, charts, log, results."""
    return [c["progress"], c["failure"], c["cancel"], c["resume"], *_drawing_outputs(c)]


def show_new_run(c: dict, info: dict) -> list:
    """view_outputs' values for a run just started or queued (Start): the page shows it at once ("starting · run
    X", its empty charts and log) instead of the previous run until the next refresh, and refreshes still running
    with the previous run do not draw it back (c["chosen"])."""
    c["chosen"].set(info["name"])
    drawings, sig = _drawings(info, {})
    return [*_status(info), *drawings, sig]


def _pick(runs: list[dict], selected: str | None) -> tuple[str | None, dict | None]:
    """The run to show: the selected one, else the active one, else the newest; and its info."""
    names = [r["name"] for r in runs]
    if selected not in names:
        active = next((r["name"] for r in runs if r["state"] in ("starting", "running")), None)
        selected = active or (names[0] if names else None)
    return selected, next((r for r in runs if r["name"] == selected), None)


def wire(c: dict, mgr: JobManager) -> None:
    """Refresh, run selection, Cancel and Resume.

    Two timers drive two events: the quick status (runs, progress, buttons) every STATUS_SECONDS and the drawings
    (charts, log, results) every REFRESH_SECONDS. Apart, the progress line never waits for a chart being drawn
    while training takes the CPU."""
    status_outputs = [c["runs"], c["run"], c["progress"], c["failure"], c["cancel"], c["resume"]]
    # the quick tick also hides a shown run's results as soon as that run is not done (another run was picked, or
    # it is training again): results of one run never sit under another run's progress line
    tick_outputs = [*status_outputs, c["results"]]
    drawing_outputs = _drawing_outputs(c)

    def outdated(asked: str | None) -> bool:
        """Whether another run was chosen on this page while a refresh showing `asked` was running."""
        chosen = c["chosen"].peek()
        return chosen is not None and asked != chosen

    def read(selected):
        """Re-read every run from disk (this is also how a reloaded page reattaches): (status outputs, shown run)."""
        mgr.poll()
        runs = mgr.every_run()  # the shell's runs and searches' trials too: every run of the folder
        selected, info = _pick(runs, selected)
        return (run_view.runs_table(runs), gr.update(choices=[r["name"] for r in runs], value=selected),
                *_status(info)), info

    def refresh(selected):
        return read(selected)[0]

    def refresh_drawings(selected, drawn, picked=None):
        """Redraw what changed of the shown run (the same choice of run as `refresh`)."""
        selected = picked or selected  # see c["picked"] in build
        try:
            info = mgr.record(selected) if selected else None  # one run's files, not every run's
        except JobError:
            info = None
        if info is None:
            _, info = _pick(mgr.every_run(), selected)
        view, sig = _drawings(info, drawn or {})
        return (gr.skip(),) * len(drawing_outputs) if outdated(selected) else (*view, sig)

    def tick(selected, picked, drawn=None):
        status, info = read(picked or selected)  # see c["picked"] in build
        if outdated(picked or selected):
            return (gr.skip(),) * (len(tick_outputs) + 1)
        if info and info["state"] == "done":
            return (*status, gr.skip(), gr.skip())
        # hidden results are redrawn by the next drawing tick: a tick that read the run left just before a pick
        # may land after the picked run's results were drawn, and would otherwise hide them for good
        return (*status, gr.update(visible=False), {**(drawn or {}), "results": None})

    c["status_timer"].tick(tick, [c["run"], c["picked"], c["drawn"]], [*tick_outputs, c["drawn"]],
                           api_name="train_refresh", show_progress="hidden")
    c["timer"].tick(refresh_drawings, [c["run"], c["drawn"], c["picked"]], drawing_outputs,
                    api_name="train_refresh_drawings", show_progress="hidden")

    def select_run(selected, drawn):
        """A run chosen by the user: its whole view at once, and the previous action's message cleared; the
        choice is remembered: refreshes queued before it show this run, not the one in their queued inputs."""
        c["chosen"].set(selected)
        return (*refresh(selected), *refresh_drawings(selected, drawn), "", selected)

    outputs = [*status_outputs, *drawing_outputs, c["action_message"], c["picked"]]
    c["run"].input(select_run, [c["run"], c["drawn"]], outputs, api_name="train_select_run", show_progress="hidden")

    def select_row(evt: gr.SelectData):
        row = evt.row_value if evt is not None else None
        # `picked` at once too: a tick running before the run is drawn already shows the clicked run
        return (gr.update(value=row[0]), row[0]) if row else (gr.update(), gr.skip())

    # a row click sets the picker, then shows that run at once instead of at the next tick
    c["runs"].select(select_row, None, [c["run"], c["picked"]], api_name="train_pick_run").then(
        select_run, [c["run"], c["drawn"]], outputs, api_name="train_show_picked_run", show_progress="hidden")
    _wire_actions(c, mgr)


def _wire_actions(c: dict, mgr: JobManager) -> None:
    """Cancel and Resume: the outcome in the run view's message line, errors too (API clients get the error)."""
    def act(what: str, selected: str | None) -> tuple:
        if not selected:
            raise gr.Error("select a run first", print_exception=False)
        try:
            info = getattr(mgr, what)(selected)
        except (JobError, ConfigError) as e:
            raise gr.Error("; ".join(e.problems) if isinstance(e, ConfigError) else str(e),
                           print_exception=False) from None
        return (run_view.progress_html(info), message(run_view.action_words(what, info)), *_buttons(info))

    @ui_errors(toast=False)
    def run_cancel(selected):
        return act("cancel", selected)

    @ui_errors(toast=False)
    def run_resume(selected):
        return act("resume", selected)

    outputs = [c["progress"], c["action_message"], c["cancel"], c["resume"]]
    others = [c["progress"], c["cancel"], c["resume"]]
    for button, handler, name in ((c["cancel"], run_cancel, "train_cancel"), (c["resume"], run_resume,
                                                                                "train_resume")):
        event = button.click(handler, c["run"], outputs, api_name=name, show_progress="hidden")
        # the failure listener writes the line into the panel and "updates" the other outputs with a skip: an
        # output a failed event leaves unwritten keeps Gradio's red "Error" badge over it (the progress line)
        show_errors(event, handler, c["action_message"], reset=lambda: (gr.skip(),) * len(others), outputs=others)


def wire_open_in_predict(c: dict, mgr: JobManager, tabs, predict_model, predict_tab_id="prediction",
                         runs_dir=None) -> None:
    """'Open model in the Prediction tab': select that tab and put the run in its model picker."""
    def open_predict(selected):
        try:
            run_dir = Path(mgr.record(selected)["dir"]) if selected else None
        except JobError:
            run_dir = None
        if run_dir is None or not (run_dir / "model" / "config.json").exists():
            raise gr.Error("this run has no finished model yet")
        path = str(Path(runs_dir) / selected) if runs_dir is not None else str(run_dir)
        try:
            from ui.predict_tab import model_choices

            picker = model_choices(Path(runs_dir or mgr.runs_dir), value=path)  # refreshed list, new run chosen
        except ImportError:
            picker = gr.update(value=path)
        return gr.Tabs(selected=predict_tab_id), picker

    c["open_predict"].visible = True
    c["open_predict"].click(open_predict, c["run"], [tabs, predict_model], api_name="train_open_in_predict")
