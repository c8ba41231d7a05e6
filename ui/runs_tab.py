"""Runs tab: every run of the runs folder (search trials included) as a sortable, filterable leaderboard, exported
as CSV; two or more runs compared (curves on shared axes by step or epoch, the config.yaml keys that differ, their
per-class, per-label or regression metrics side by side); a finished run deleted after a confirmation.

The rows come from engine/runs/leaderboard.py, the comparison from engine/runs/compare.py, what differs between heads
from ui/heads_view.py, deletion from the job runner (engine/runs/jobs.py: it refuses queued and running runs). API:
/runs_table (filter, states, tasks, sort, descending) -> (table, csv file, ...); /runs_compare (runs, x axis) -> (loss
plot, metric plot, caption, config diff, side-by-side metrics); /runs_delete_ask (run), /runs_delete (run).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from engine.rundir import read_json
from engine.runs import compare, leaderboard
from engine.runs.jobs import JobError
from engine.tasks import REGISTRY
from ui import heads_view
from ui.common import AppContext, SessionValue, hide_server_paths, message, show_errors, ui_errors
from ui.run_view import fmt_seconds

TAB_ID = "runs"
REFRESH_SECONDS = 5.0  # the table follows running runs; redrawn only when a row changed
STATES = ("queued", "running", "done", "failed", "cancelled", "prepared")
NEWEST = "newest first"
# row key -> column title, in the table's order
# (a search's trials are named search/trial-N: the name says their search, the CSV has it as `group` too)
DISPLAY = (("name", "run"), ("state", "state"), ("task", "task"), ("base_model", "base model"),
           ("dataset", "dataset"), ("metric", "metric"), ("best_metric", "best"), ("learning_rate", "lr"),
           ("num_train_epochs", "epochs"), ("batch_size", "batch"), ("max_seq_length", "max len"), ("step", "steps"),
           ("duration_s", "duration"), ("samples_per_second", "samples/s"), ("started", "started"))
SORT_KEYS = {title: key for key, title in DISPLAY}
FORMATS = {"best_metric": "{:.4f}", "learning_rate": "{:g}", "num_train_epochs": "{:g}",
           "samples_per_second": "{:.1f}"}
_CSV_DIR: list[Path] = []  # one temporary folder per process for the CSV downloads


def _cell(r: dict, key: str) -> str:
    value = r.get(key)
    if key == "step":
        return f"{value or 0}/{r.get('total_steps') or '?'}"
    if value is None:
        return ""
    if key == "duration_s":
        return fmt_seconds(value)
    if key == "base_model":  # the model's own name: a local folder's path is the server's business
        return Path(str(value)).name or str(value)
    return FORMATS[key].format(value) if key in FORMATS and isinstance(value, (int, float)) else str(value)


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """The leaderboard rows as the table shows them (one formatted string per cell)."""
    return pd.DataFrame([[_cell(r, key) for key, _ in DISPLAY] for r in rows], columns=[t for _, t in DISPLAY])


def csv_file(rows: list[dict]) -> str:
    """The rows as runs.csv for the download (raw numbers; no server paths): one file per distinct content."""
    public = [{**r, "base_model": hide_server_paths(str(r["base_model"])) if r.get("base_model") else None}
              for r in rows]
    text = leaderboard.to_csv(public, [c for c in leaderboard.COLUMNS if c != "path"])
    if not _CSV_DIR:
        _CSV_DIR.append(Path(tempfile.mkdtemp(prefix="hubtune-runs-csv-")))
    path = _CSV_DIR[0] / hashlib.sha1(text.encode()).hexdigest()[:12] / "runs.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return str(path)


def shown_rows(runs_dir: Path, text: str = "", states=(), tasks=(), sort: str | None = None,
               descending: bool = True) -> tuple[list[dict], list[dict]]:
    """(every run's row, the rows the filters keep in the chosen order)."""
    rows = leaderboard.rows(runs_dir)
    key = SORT_KEYS.get(sort) if sort and sort != NEWEST else None
    return rows, leaderboard.sort_rows(leaderboard.filter_rows(rows, text or "", states or (), tasks or ()), key,
                                       descending)


def _build_table(runs_dir: Path) -> dict:
    c: dict = {}
    gr.Markdown("Every run of the runs folder, search trials included (`search/trial-N`). Sort and filter below, "
                "click rows to compare runs, or delete a run you no longer need.")
    with gr.Row(equal_height=True):
        c["filter"] = gr.Textbox(label="filter", placeholder="words of a run's name, model, data, task ...",
                                 scale=3, elem_id="runs-filter")
        c["states"] = gr.Dropdown(list(STATES), value=[], multiselect=True, label="state", scale=2,
                                  elem_id="runs-states")
        c["tasks"] = gr.Dropdown(list(REGISTRY), value=[], multiselect=True, label="task", scale=2,
                                 elem_id="runs-tasks")
        c["sort"] = gr.Dropdown([NEWEST, *SORT_KEYS], value=NEWEST, label="sort by", scale=2, elem_id="runs-sort")
        c["descending"] = gr.Checkbox(True, label="largest first", scale=1, elem_id="runs-descending")
    c["count"] = gr.Markdown(elem_id="runs-count")
    c["table"] = gr.Dataframe(table_frame([]), interactive=False, max_height=420, elem_id="runs-table",
                              pinned_columns=1, label="runs (click a row to add it to the comparison, again to "
                                                      "take it out)")
    with gr.Row():
        c["refresh"] = gr.Button("Refresh", size="sm", scale=0, elem_id="runs-refresh")
        c["csv"] = gr.DownloadButton("Download CSV", size="sm", scale=0, elem_id="runs-csv")
    c["shown"] = gr.State(None)  # per page: the rows last drawn, so an unchanged tick redraws nothing
    c["timer"] = gr.Timer(REFRESH_SECONDS)
    return c


def _build_compare() -> dict:
    c: dict = {}
    gr.Markdown("### Compare runs")
    with gr.Row(equal_height=True):
        c["compare"] = gr.Dropdown([], value=[], multiselect=True, label="runs to compare (two or more)", scale=4,
                                   elem_id="runs-compare")
        c["x"] = gr.Radio(list(compare.X_AXES), value="step", label="x axis", scale=1, elem_id="runs-x")
    c["note"] = gr.Markdown(elem_id="runs-compare-note")
    with gr.Row():
        c["loss_plot"] = gr.Plot(show_label=False, elem_id="runs-plot-loss", format="png")
        c["metric_plot"] = gr.Plot(show_label=False, elem_id="runs-plot-metric", format="png")
    c["diff"] = gr.Dataframe(interactive=False, wrap=True, label="config.yaml: only the keys that differ",
                             elem_id="runs-config-diff", max_height=360)
    c["side"] = gr.Dataframe(interactive=False, label="validation metrics side by side", elem_id="runs-side-by-side",
                             max_height=420)
    return c


def _build_delete() -> dict:
    c: dict = {}
    gr.Markdown("### Delete a run")
    with gr.Row():
        c["delete_run"] = gr.Dropdown([], value=None, label="run to delete", scale=3, elem_id="runs-delete-run")
        with gr.Column(scale=1, min_width=160):
            c["delete"] = gr.Button("Delete…", variant="secondary", elem_id="runs-delete")
    with gr.Row(visible=False, elem_id="runs-confirm") as c["confirm_row"]:
        c["confirm_text"] = gr.Markdown(elem_id="runs-confirm-text")
        c["confirm"] = gr.Button("Yes, delete it", variant="stop", scale=0, elem_id="runs-delete-confirm")
        c["keep"] = gr.Button("Keep it", scale=0, elem_id="runs-delete-keep")
    c["message"] = gr.Markdown(elem_id="runs-message")
    c["pending"] = gr.State(None)  # the run the confirmation names: the one a confirm deletes
    return c


def build(ctx: AppContext) -> None:
    """app.py's TABS entry: build the Runs tab inside the current gr.Tab and wire it."""
    c = {**_build_table(ctx.runs_dir), **_build_compare(), **_build_delete()}
    _wire_table(c, ctx.runs_dir)
    _wire_compare(c, ctx.runs_dir)
    _wire_delete(c, ctx.runs_dir)
    ctx.on_built.append(lambda ctx: ctx.demo.load(c["refresh_fn"], c["filters"], c["table_outputs"],
                                                  api_name="runs_load", show_progress="hidden"))
    if ctx.tabs is not None:  # a run finished while another tab was shown is listed on arrival, not a tick later
        ctx.tabs.change(c["refresh_fn"], [*c["filters"], c["shown"]], c["table_outputs"], api_name="runs_on_tab",
                        api_visibility="private", show_progress="hidden")


def _wire_table(c: dict, runs_dir: Path) -> None:
    filters = [c["filter"], c["states"], c["tasks"], c["sort"], c["descending"]]
    outputs = [c["table"], c["csv"], c["count"], c["compare"], c["delete_run"], c["shown"]]

    def refresh(text, states, tasks, sort, descending, last=None):
        """The table, its CSV and the run pickers' choices; all skipped when the shown rows are unchanged."""
        rows, shown = shown_rows(runs_dir, text, states, tasks, sort, descending)
        if last is not None and last == shown:
            return (gr.skip(),) * len(outputs)
        names = [r["name"] for r in rows]
        count = f"{len(shown)} of {len(rows)} runs shown" if len(shown) != len(rows) else f"{len(rows)} runs"
        return (table_frame(shown), csv_file(shown), count, gr.update(choices=names), gr.update(choices=names),
                shown)

    c["refresh_fn"], c["filters"], c["table_outputs"] = refresh, filters, outputs
    gr.on([c["filter"].change, c["states"].change, c["tasks"].change, c["sort"].change, c["descending"].change,
           c["refresh"].click], refresh, filters, outputs, api_name="runs_table", show_progress="hidden",
          trigger_mode="always_last")  # typing in the filter: the latest text is the one that counts
    c["timer"].tick(refresh, [*filters, c["shown"]], outputs, api_name="runs_refresh", show_progress="hidden")

    picked = SessionValue()  # each browser's comparison as the server last set it

    def toggle(current, evt: gr.SelectData):
        """A row click adds its run to the comparison, or takes it out when it is in already. The clicks of one page
        run one after another (concurrency 1) and each starts from the list the previous click left on the server:
        a second click sent before the first one's answer reached the page sees its run, not a stale box."""
        name = evt.row_value[0] if evt is not None and evt.row_value else None
        if not name:
            return gr.skip()
        current = list(picked.get(current) or [])
        new = [n for n in current if n != name] if name in current else [*current, name]
        picked.set(new)
        return new

    # "multiple": gradio's default ("once") drops a click made while the previous one is still running
    c["table"].select(toggle, c["compare"], c["compare"], api_name="runs_pick", show_progress="hidden",
                      trigger_mode="multiple", concurrency_limit=1, concurrency_id="runs_pick")
    # what the user types or removes in the box itself is the new starting point
    c["compare"].input(lambda names: picked.set(list(names or [])), c["compare"], None, queue=False,
                       api_name="runs_pick_box", api_visibility="private")


def comparison(runs_dir: Path, names: list[str], x: str = "step") -> tuple:
    """(loss figure, metric figure, caption, config diff, metrics side by side) of the named runs; fewer than two
    existing runs: nothing drawn and a caption saying what to do."""
    rows = {r["name"]: r for r in leaderboard.rows(runs_dir)}
    names = [n for n in dict.fromkeys(names or []) if n in rows]
    if len(names) < 2:
        return (None, None, "Pick two or more runs (click their rows in the table, or choose them here) to see "
                "their curves on shared axes, the config keys that differ and their metrics side by side.",
                pd.DataFrame(), pd.DataFrame())
    dirs = {n: Path(rows[n]["path"]) for n in names}
    # fitted to the values, not the head's 0-100%: runs a point apart must look apart
    style = heads_view.metric_style([heads_view.run_problem_type(p) for p in dirs.values()],
                                    [rows[n]["metric"] for n in names if rows[n]["metric"]])
    data = {n: compare.curves(p, x) for n, p in dirs.items()}
    loss, metric = compare.comparison_figures(data, x, style)
    points = [f"**{n}** ({len(d['train_loss'][0])} train and {len(d['eval_loss'][0])} validation points)"
              for n, d in data.items()]
    diff = compare.config_diff(dirs)
    frame = pd.DataFrame([[d["key"], *(_value(d[n]) for n in names)] for d in diff], columns=["key", *names])
    finished = {n: read_json(Path(p) / "metrics.json", {}) for n, p in dirs.items()}
    missing = [n for n, m in finished.items() if not m]
    side = heads_view.side_by_side({n: m for n, m in finished.items() if m})
    caption = (f"{len(names)} runs by {x}: " + ", ".join(points) +
               (f". {len(diff)} config {'key differs' if len(diff) == 1 else 'keys differ'}" if diff else ". Their configs are the same (but output_dir)") +
               (f". No final metrics yet: {', '.join(missing)}" if missing else "") + ".")
    return loss, metric, caption, frame, side


def _value(v) -> str:
    return "null" if v is None else hide_server_paths(str(v))


def _wire_compare(c: dict, runs_dir: Path) -> None:
    outputs = [c["loss_plot"], c["metric_plot"], c["note"], c["diff"], c["side"]]

    @ui_errors
    def runs_compare(names, x):
        return comparison(runs_dir, names, x or "step")

    gr.on([c["compare"].change, c["x"].change], runs_compare, [c["compare"], c["x"]], outputs,
          api_name="runs_compare", show_progress="hidden")


def _wire_delete(c: dict, runs_dir: Path) -> None:
    from ui.train_tab import manager  # the app's one job runner for this runs folder

    mgr = manager(runs_dir)

    @ui_errors(toast=False)
    def runs_delete_ask(name):
        """First click: refuse at once what cannot go, else ask to confirm (the run named in the question)."""
        if not name:
            raise gr.Error("delete: pick the run to delete first", print_exception=False)
        try:
            mgr.delete(name, check_only=True)
        except JobError as e:
            raise gr.Error(str(e), print_exception=False) from None
        ask = (f"Delete run **{name}**? Its folder goes: model, checkpoints, metrics, log. This cannot be undone.")
        return gr.update(visible=True), ask, "", name

    @ui_errors(toast=False)
    def runs_delete(name, compared, *filters):
        """Second click: delete through the job runner (it refuses a run that started meanwhile)."""
        if not name:
            raise gr.Error("delete: nothing to confirm; press Delete… first", print_exception=False)
        try:
            mgr.delete(name)
        except JobError as e:
            raise gr.Error(str(e), print_exception=False) from None
        table = c["refresh_fn"](*filters)
        kept = [n for n in (compared or []) if n != name]
        return (gr.update(visible=False), message(f"Run `{name}` deleted: its folder is gone, nothing else was "
                                                  "touched."), None, *table[:3], {**table[3], "value": kept},
                {**table[4], "value": None}, table[5])

    hide = (gr.update(visible=False), None)
    ask = c["delete"].click(runs_delete_ask, c["delete_run"], [c["confirm_row"], c["confirm_text"], c["message"],
                                                               c["pending"]], api_name="runs_delete_ask")
    show_errors(ask, runs_delete_ask, c["message"], reset=lambda: hide, outputs=[c["confirm_row"], c["pending"]])
    outputs = [c["confirm_row"], c["message"], c["pending"], c["table"], c["csv"], c["count"], c["compare"],
               c["delete_run"], c["shown"]]
    done = c["confirm"].click(runs_delete, [c["pending"], c["compare"], *c["filters"]], outputs,
                              api_name="runs_delete")
    show_errors(done, runs_delete, c["message"], reset=lambda: hide, outputs=[c["confirm_row"], c["pending"]])
    # a confirmation never outlives the run it names
    for event, api in ((c["keep"].click, "runs_delete_keep"), (c["delete_run"].change, "runs_delete_pick")):
        event(lambda: hide, None, [c["confirm_row"], c["pending"]], api_name=api, show_progress="hidden",
              queue=False)
