"""The Fine-tuning tab's right column: every run, the selected run's live view, its results, Cancel/Resume.

It only reads run directories (refreshed by a gr.Timer through the job runner), so a reloaded page reattaches to a
running run and any number of pages show the same runs.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine.config import ConfigError
from engine.jobs import JobError, JobManager
from ui import hub_panel, run_view

REFRESH_SECONDS = 2.0


def build(mgr: JobManager) -> dict:
    """Render the column (call inside a gr.Column); returns its components by name."""
    c: dict = {}
    gr.Markdown("### 3 · Runs")
    c["runs"] = gr.Dataframe(run_view.runs_table([]), label="all runs", interactive=False,
                             elem_id="train-runs")
    with gr.Row():
        # custom values: API clients name runs started after this page was built; handlers check every name
        c["run"] = gr.Dropdown([r["name"] for r in mgr.list_runs()], value=None, label="show run",
                               allow_custom_value=True, elem_id="train-run")
        c["cancel"] = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
        c["resume"] = gr.Button("Resume", elem_id="train-resume")
    c["progress"] = gr.HTML(run_view.progress_html(None), elem_id="train-progress")
    with gr.Row():
        c["loss_plot"] = gr.LinePlot(x="step", y="loss", color="series", title="loss", elem_id="plot-loss")
        c["metric_plot"] = gr.LinePlot(x="step", y="value", color="metric", title="validation metrics",
                                       elem_id="plot-metrics", y_lim=[0, 1])
    with gr.Row():
        c["lr_plot"] = gr.LinePlot(x="step", y="learning_rate", title="learning rate", elem_id="plot-lr")
        c["speed_plot"] = gr.LinePlot(x="step", y="samples_per_second", title="samples/s",
                                      elem_id="plot-speed")
    c["log"] = gr.Textbox(label="log (train.log)", lines=8, max_lines=8, autoscroll=True,
                          elem_id="train-log", interactive=False)
    with gr.Group(visible=False) as c["results"]:
        c["metrics"] = gr.Dataframe(label="validation metrics", elem_id="train-metrics")
        with gr.Row():
            c["confusion"] = gr.Image(label="confusion matrix", type="filepath", elem_id="train-confusion")
            c["per_class"] = gr.Dataframe(label="per-class report", elem_id="train-per-class")
        c["wrong"] = gr.Dataframe(label="misclassified validation examples", wrap=True, max_height=300,
                                  elem_id="train-wrong")
        # shown once wired to a Prediction tab (app.py), hidden on the standalone page
        c["open_predict"] = gr.Button("Open model in the Prediction tab", variant="primary",
                                      elem_id="train-open-predict", visible=False)
        c["hub"] = hub_panel.build(c["run"], mgr.run_dir)  # push the shown finished run to the Hub
    c["timer"] = gr.Timer(REFRESH_SECONDS)
    return c


def wire(c: dict, mgr: JobManager) -> None:
    """Refresh, run selection, Cancel and Resume."""
    view_outputs = [c["runs"], c["run"], c["progress"], c["loss_plot"], c["metric_plot"], c["lr_plot"],
                    c["speed_plot"], c["log"], c["results"], c["metrics"], c["confusion"], c["per_class"], c["wrong"]]

    def refresh(selected):
        """Re-read every run from disk (this is also how a reloaded page reattaches)."""
        mgr.poll()
        runs = mgr.list_runs()
        names = [r["name"] for r in runs]
        if selected not in names:
            active = next((r["name"] for r in runs if r["state"] in ("starting", "running")), None)
            selected = active or (names[0] if names else None)
        info = next((r for r in runs if r["name"] == selected), None)
        table = run_view.runs_table(runs)
        if info is None:
            return (table, gr.update(choices=names, value=None), run_view.progress_html(None), *[None] * 4, "",
                    gr.update(visible=False), None, None, None, None)
        run_dir = Path(info["dir"])
        cur = run_view.curves(run_dir)
        res = run_view.results(run_dir) if info["state"] == "done" else None
        tail = [gr.update(visible=False), None, None, None, None] if res is None else [
            gr.update(visible=True), res["headline"], run_view.confusion_png(run_dir), res["per_class"],
            res["misclassified"]]
        return (table, gr.update(choices=names, value=selected), run_view.progress_html(info), cur["loss"],
                cur["metrics"], cur["lr"], cur["speed"], run_view.log_tail(run_dir), *tail)

    c["timer"].tick(refresh, c["run"], view_outputs, api_name="train_refresh", show_progress="hidden")
    c["run"].input(refresh, c["run"], view_outputs, api_name="train_select_run", show_progress="hidden")

    def select_row(evt: gr.SelectData):
        row = evt.row_value if evt is not None else None
        return gr.update(value=row[0]) if row else gr.update()

    c["runs"].select(select_row, None, c["run"], api_name="train_pick_run")

    def act(what):
        def handler(selected):
            if not selected:
                raise gr.Error("select a run first")
            try:
                info = getattr(mgr, what)(selected)
            except (JobError, ConfigError) as e:
                raise gr.Error(str(e)) from None
            return run_view.progress_html(info)
        return handler

    c["cancel"].click(act("cancel"), c["run"], c["progress"], api_name="train_cancel")
    c["resume"].click(act("resume"), c["run"], c["progress"], api_name="train_resume")


def wire_open_in_predict(c: dict, mgr: JobManager, tabs, predict_model, predict_tab_id="prediction",
                         runs_dir=None) -> None:
    """'Open model in the Prediction tab': select that tab and put the run in its model picker."""
    def open_predict(selected):
        if not selected or not (mgr.run_dir(selected) / "model" / "config.json").exists():
            raise gr.Error("this run has no finished model yet")
        path = str(Path(runs_dir) / selected) if runs_dir is not None else str(mgr.run_dir(selected))
        try:
            from ui.predict_tab import model_choices

            picker = model_choices(Path(runs_dir or mgr.runs_dir), value=path)  # refreshed list, new run chosen
        except ImportError:
            picker = gr.update(value=path)
        return gr.Tabs(selected=predict_tab_id), picker

    c["open_predict"].visible = True
    c["open_predict"].click(open_predict, c["run"], [tabs, predict_model], api_name="train_open_in_predict")
