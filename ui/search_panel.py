"""The Fine-tuning tab's Search mode: a hyperparameter search (engine.search, Optuna) over the form's config.

The left column's data and hyperparameters are every trial's base config; this panel adds the keys that vary
(YAML: `{low, high, log}` ranges or `[choices]`), n_trials, the metric, sampler and pruner. Check and Start both
call `engine.search.prepare` (the block, the base config, data and model, the metric against the data's head), so
they refuse the same input with the same lines. Start writes <search>/search.yaml and runs the command it shows
as a background process (engine/search/jobs.py); the view only reads the search folder's files (trials.json,
search.json, the plots), so closing the page never stops a search and any page reattaches. No torch here.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from engine.config import ConfigError
from engine.runs.jobs import JobError, JobManager, slug
from engine.runs.listing import data_label
from engine.search.config import PRUNERS, SAMPLERS
from engine.search.report import PLOTS
from engine.training.launch import rel_path
from ui.common import hide_server_paths, message, show_errors, ui_errors

MODES = ("One run", "Hyperparameter search")
REFRESH_SECONDS = 2.0
EXAMPLE = ("learning_rate: {low: 1e-5, high: 3e-4, log: true}\n"
           "per_device_train_batch_size: [16, 32]\n"
           "warmup_ratio: {low: 0.0, high: 0.2}\n")
LIVE = ("starting", "running")
RESUMABLE = ("cancelled", "interrupted", "failed")
# the train-mode widgets hidden while the Search mode is on (its own buttons, message and command show instead)
TRAIN_ONLY = ("run_name", "check", "start", "problems", "command", "run_column")


def _metrics() -> list[str]:
    from engine.tasks.heads import HEADS

    return ["auto", *sorted({m for h in HEADS.values() for m in h.metrics_names})]


def build_settings(c: dict) -> None:
    """The mode switch and the search settings (left column, under the hyperparameters)."""
    c["mode"] = gr.Radio(list(MODES), value=MODES[0], label="mode", elem_id="train-mode",
                         info="One run trains the form's config; a search trains several trials of it with the "
                              "keys below varied (Optuna).")
    with gr.Group(visible=False, elem_id="search-settings") as c["search_settings"]:
        c["search_name"] = gr.Textbox(label="search name", placeholder="(automatic: search-<data>-<n>)",
                                      elem_id="search-name")
        c["search_params"] = gr.Textbox(EXAMPLE, lines=5, label="keys to vary (YAML)", elem_id="search-params",
                                        info="TrainConfig keys: a range {low, high, log: true, step} or a list of "
                                             "choices [a, b]. The form above gives every other value.")
        with gr.Row():
            c["search_trials"] = gr.Number(8, precision=0, label="n_trials", elem_id="search-n-trials")
            c["search_metric"] = gr.Dropdown(_metrics(), value="auto", label="metric", elem_id="search-metric",
                                             info="auto: the run's metric_for_best_model (the head's)")
        with gr.Row():
            c["search_sampler"] = gr.Dropdown(list(SAMPLERS), value="tpe", label="sampler", elem_id="search-sampler")
            c["search_pruner"] = gr.Dropdown(list(PRUNERS), value="median", label="pruner", elem_id="search-pruner")
            c["search_startup"] = gr.Number(2, precision=0, label="prune after N completed trials",
                                            elem_id="search-startup", info="median / percentile pruner")
        with gr.Row():
            c["search_check"] = gr.Button("Check search", elem_id="search-check")
            c["search_start"] = gr.Button("Start search", variant="primary", elem_id="search-start")
        c["search_message"] = gr.Markdown(elem_id="search-message")
        c["search_command"] = gr.Code(label="command (run from the repository root)", language="shell",
                                      elem_id="search-command", interactive=False)


def build_view(c: dict, mgr: JobManager) -> None:
    """The live view of a search (right column): trials table, best so far, Optuna's plots, Cancel / Resume."""
    from engine.search.jobs import list_searches

    with gr.Column(visible=False, elem_id="search-view") as c["search_view"]:
        gr.Markdown("### 3 · Searches")
        with gr.Row(equal_height=True):
            c["search_pick"] = gr.Dropdown(list_searches(mgr.runs_dir), value=None, label="show search",
                                           allow_custom_value=True, elem_id="search-pick", scale=3)
            c["search_cancel"] = gr.Button("Cancel search", interactive=False, elem_id="search-cancel", scale=1)
            c["search_resume"] = gr.Button("Resume search", interactive=False, elem_id="search-resume", scale=1)
        c["search_action"] = gr.Markdown(elem_id="search-action")
        c["search_status"] = gr.HTML("<div id='search-state'>No search yet.</div>", elem_id="search-status")
        c["search_best"] = gr.Markdown(elem_id="search-best")
        c["search_table"] = gr.Dataframe(label="trials", interactive=False, wrap=True, elem_id="search-table",
                                         max_height=420)
        # the PNGs carry their own titles (a label badge would cover them)
        with gr.Row():
            c["search_history"] = gr.Image(label="optimization history", show_label=False, type="filepath",
                                           interactive=False, elem_id="search-history")
            c["search_importance"] = gr.Image(label="parameter importances", show_label=False, type="filepath",
                                              interactive=False, elem_id="search-importance")
        gr.Markdown("Optuna's plots: the optimization history once a trial completed, parameter importances once "
                    "two did.", elem_id="search-plots-note")
        c["search_drawn"] = gr.State({})
        c["search_picked"] = gr.State(None)  # the search chosen last (by the user or by Start); see run_panel
        c["search_timer"] = gr.Timer(REFRESH_SECONDS)


# ------------------------------------------------------------------------------------------------------------
# the one derivation: widgets -> checked plan


def _block(params_text, n_trials, metric, sampler, pruner, startup) -> dict:
    import yaml

    try:
        params = yaml.safe_load(params_text or "")
    except yaml.YAMLError as e:
        raise ConfigError(f"search.params: not valid YAML ({str(e).splitlines()[0]}); write one key: range or "
                          "key: [choices] a line") from None
    takes_startup = pruner in ("median", "percentile") and startup is not None
    return {"params": params, "n_trials": n_trials, "metric": None if metric == "auto" else metric,
            "sampler": sampler, "pruner": {"type": pruner, "n_startup_trials": startup} if takes_startup else pruner}


def _search_dir(mgr: JobManager, name: str | None, cfg) -> Path:
    if name and name.strip():
        path = mgr.runs_dir / slug(name)
        if path.exists():
            raise JobError(f"search name: '{path.name}' is already taken; choose another name, or leave the box "
                           "empty for an automatic one")
        return path
    base, n = f"search-{slug(data_label(cfg))}", 1
    while (mgr.runs_dir / f"{base}-{n}").exists():
        n += 1
    return mgr.runs_dir / f"{base}-{n}"


def _problems(e: Exception) -> str:
    lines = e.problems if isinstance(e, ConfigError) else [str(getattr(e, "message", e))]
    return message("**Please fix before starting the search:**\n\n" + "\n".join(
        f"- {hide_server_paths(p)}" for p in lines), "error")


def _summary(plan) -> str:
    varied = ", ".join(plan.spec.params)
    return (f"{plan.spec.n_trials} trials varying {varied}; {plan.metric} ({plan.direction}), sampler "
            f"{plan.spec.sampler}, pruner {plan.spec.pruner}; every trial a run in `{plan.search_dir.name}/trial-N`")


# ------------------------------------------------------------------------------------------------------------
# handlers


def wire(c: dict, mgr: JobManager, inputs: list, base_config) -> None:
    """Mode switch, Check / Start, the view's refresh, Cancel / Resume. `inputs` are the accelerate config and the
    widgets `base_config(*values)` turns into the trials' base TrainConfig (the tab's own derivation)."""
    from engine.search.study import prepare

    fields = [c["search_name"], c["search_params"], c["search_trials"], c["search_metric"], c["search_sampler"],
              c["search_pruner"], c["search_startup"]]

    def on_mode(mode):
        search = mode == MODES[1]
        return (gr.update(visible=search), gr.update(visible=search),
                *(gr.update(visible=not search) for _ in TRAIN_ONLY))

    c["mode"].change(on_mode, c["mode"], [c["search_settings"], c["search_view"], *(c[k] for k in TRAIN_ONLY)],
                     api_name="search_mode", show_progress="hidden")

    def plan(name, params_text, n_trials, metric, sampler, pruner, startup, accel, *values):
        cfg = base_config(*values)
        return prepare(cfg, _block(params_text, n_trials, metric, sampler, pruner, startup),
                       _search_dir(mgr, name, cfg), accelerate_config=accel)

    @ui_errors(toast=False)
    def check(*args, progress=gr.Progress()):
        from engine.search.jobs import shown_command

        progress(0.1, desc="checking the search, the data and the model")
        try:
            p = plan(*args)
        except (ConfigError, JobError, gr.Error) as e:
            return _problems(e), ""
        return message(f"the search is valid: {_summary(p)}"), shown_command(p.search_dir)

    @ui_errors(toast=False)
    def start(*args):
        import yaml

        from engine.rundir import atomic_write_text
        from engine.search.jobs import list_searches, start as start_search

        try:
            p = plan(*args)
        except (ConfigError, JobError, gr.Error) as e:
            return _problems(e), gr.update(), gr.update(), gr.skip()
        p.search_dir.mkdir(parents=True)
        atomic_write_text(p.search_dir / "search.yaml", yaml.safe_dump(p.search_yaml(), sort_keys=False))
        record = start_search(p.search_dir)
        name = p.search_dir.name
        return (message(f"search `{name}` started: {_summary(p)}"), record["command"],
                gr.update(choices=list_searches(mgr.runs_dir), value=name), name)

    buttons = [c["search_check"], c["search_start"]]
    for button, handler, name, outputs in (
            (c["search_check"], check, "search_check", [c["search_message"], c["search_command"]]),
            (c["search_start"], start, "search_start", [c["search_message"], c["search_command"], c["search_pick"],
                                                         c["search_picked"]])):
        dep = (button.click(lambda: (gr.update(interactive=False),) * 2 + ("",), None, [*buttons, c["search_message"]],
                            api_name=f"{name}_lock", queue=False, show_progress="hidden")
               .then(handler, [*fields, *inputs], outputs, api_name=name, show_progress_on=c["search_message"]))
        dep.then(lambda: (gr.update(interactive=True),) * 2, None, buttons, api_name=f"{name}_unlock", queue=False,
                 show_progress="hidden")
        show_errors(dep, handler, c["search_message"])
    _wire_view(c, mgr)


def _wire_view(c: dict, mgr: JobManager) -> None:
    from engine.search import jobs as search_jobs

    view = [c["search_pick"], c["search_status"], c["search_best"], c["search_table"], c["search_history"],
            c["search_importance"], c["search_cancel"], c["search_resume"], c["search_drawn"]]

    def refresh(selected, picked, drawn):
        names = search_jobs.list_searches(mgr.runs_dir)
        selected = picked or selected
        selected = selected if selected in names else (names[0] if names else None)
        return (gr.update(choices=names, value=selected), *_view(mgr.runs_dir / selected if selected else None,
                                                                  drawn or {}))

    c["search_timer"].tick(refresh, [c["search_pick"], c["search_picked"], c["search_drawn"]], view,
                           api_name="search_refresh", show_progress="hidden")

    def select(selected):
        return (*refresh(selected, None, {}), selected, "")

    c["search_pick"].input(select, c["search_pick"], [*view, c["search_picked"], c["search_action"]],
                           api_name="search_select", show_progress="hidden")

    def act(what, selected):
        path = mgr.runs_dir / (selected or "")
        if not selected or not search_jobs.is_search(path):
            raise gr.Error("select a search first", print_exception=False)
        if what == "cancel":
            search_jobs.cancel(path)
            return message(f"search `{selected}` cancelled; its running trial was cancelled through the job runner "
                           "and will be tried again on Resume")
        if search_jobs.running_pid(path):
            raise gr.Error(f"search '{selected}' is still running", print_exception=False)
        record = search_jobs.start(path, resume=True)
        return message(f"search `{selected}` resumed: `{record['command']}`")

    @ui_errors(toast=False)
    def search_cancel(selected):
        return act("cancel", selected)

    @ui_errors(toast=False)
    def search_resume(selected):
        return act("resume", selected)

    for button, handler in ((c["search_cancel"], search_cancel), (c["search_resume"], search_resume)):
        dep = button.click(handler, c["search_pick"], c["search_action"], api_name=handler.__name__,
                           show_progress="hidden")
        show_errors(dep, handler, c["search_action"])


def _view(search_dir: Path | None, drawn: dict) -> tuple:
    """(status, best, table, history, importances, cancel, resume, drawn) of one search folder."""
    from engine.search import jobs as search_jobs

    if search_dir is None:
        return ("<div id='search-state'>No search yet.</div>", "", None, None, None,
                gr.update(interactive=False), gr.update(interactive=False), {})
    record, data = search_jobs.state(search_dir), search_jobs.trials(search_dir)
    rows, state = data.get("rows") or [], record.get("state") or "starting"
    images, stamps = [], {}
    for name in PLOTS:
        path = search_dir / name
        stamps[name] = [str(search_dir), path.stat().st_mtime_ns if path.exists() else None]
        images.append(gr.skip() if stamps[name] == drawn.get(name) else (str(path) if path.exists() else None))
    live, resumable = state in LIVE, state in RESUMABLE and (search_dir / "study.db").is_file()
    return (_status_html(search_dir.name, record, data, rows), _best_md(search_dir, data), _table(rows, data),
            *images, gr.update(interactive=live, variant="stop" if live else "secondary"),
            gr.update(interactive=resumable, variant="primary" if resumable else "secondary"), stamps)


def _status_html(name: str, record: dict, data: dict, rows: list[dict]) -> str:
    state = record.get("state") or "starting"
    counted = sum(1 for r in rows if r["state"] in ("done", "pruned", "failed"))
    parts = [f"<b id='search-state-word' data-state='{state}'>{state}</b>", f"search <code>{html.escape(name)}</code>",
             f"{counted} of {record.get('n_trials') or data.get('n_trials') or '?'} trials"]
    if data.get("metric"):
        parts.append(f"{html.escape(data['metric'])} ({data.get('direction')})")
    running = next((r for r in rows if r["state"] == "running"), None)
    line = f"<div id='search-state'>{' · '.join(parts)}</div>"
    if running and state in LIVE:
        line += f"<div id='search-running'>{running['run']} running: {html.escape(running['note'] or 'starting')}</div>"
    if record.get("error") and state not in LIVE:
        line += (f"<div id='search-error' style='color:#dc2626'>{html.escape(hide_server_paths(record['error']))}"
                 "</div>")
    return line


def _best_md(search_dir: Path, data: dict) -> str:
    best = data.get("best")
    if not best:
        return "Best so far: none yet (a trial counts once it completes)."
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
    return (f"**Best so far: {best['run']}** — {data['metric']} {best['value']:.4f} ({params}). "
            f"`best.yaml` trains it on all the data: `python -m engine.train --config "
            f"{hide_server_paths(rel_path(search_dir / 'best.yaml'))}`")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], data: dict) -> pd.DataFrame:
    names = data.get("params") or list(dict.fromkeys(k for r in rows for k in r["params"]))
    metric = data.get("metric") or "metric"
    now = time.time()
    out = []
    for r in rows:
        duration = now - r["started_at"] if r["state"] == "running" and r.get("started_at") else r["duration_s"]
        out.append({"trial": r["run"], "state": r["state"], **{n: _fmt(r["params"].get(n, "")) for n in names},
                    metric: "" if r["value"] is None else f"{r['value']:.4f}",
                    "duration": "" if duration is None else f"{duration:.0f} s",
                    "note": hide_server_paths(r["note"] or "")})
    return pd.DataFrame(out, columns=["trial", "state", *names, metric, "duration", "note"])
