"""hubtune web app: `python app.py` serves the tabs of ui/ (127.0.0.1:7860; 0.0.0.0 on a Hugging Face Space).

GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address; HUBTUNE_RUNS_DIR the runs folder (default runs/). The same
server answers the REST endpoint (engine/serving/rest.py: POST /models/{run}, POST /predict, GET /info, /health).
Importing this module builds nothing and imports no torch: `build_app()` composes the tabs, `main()` launches. Gradio
analytics stay off unless GRADIO_ANALYTICS_ENABLED=True is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ui  # noqa: F401 - sets the analytics default before gradio is imported
import gradio as gr

from ui import predict_tab, runs_tab, train_tab
from ui.common import AppContext, default_runs_dir

# (title, tab id, builder(ctx)): one line per tab, in display order. Builders find shared components in
# ctx.components (e.g. "prediction.model") and may register ctx.on_built callbacks to wire events across tabs.
TABS = [
    ("Prediction", "prediction", predict_tab.build),
    ("Fine-tuning", train_tab.TAB_ID, train_tab.build_tab),
    ("Runs", runs_tab.TAB_ID, runs_tab.build),
]


def build_app(runs_dir: str | os.PathLike | None = None) -> gr.Blocks:
    """The Blocks app with every tab of TABS, reading runs from `runs_dir` (default: HUBTUNE_RUNS_DIR or runs/)."""
    ctx = AppContext(runs_dir=Path(runs_dir) if runs_dir else default_runs_dir())
    with gr.Blocks(title="hubtune") as demo:
        ctx.demo = demo
        gr.Markdown("## hubtune — fine-tune, evaluate and serve Hugging Face classifiers")
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            for title, tab_id, build in TABS:
                with gr.Tab(title, id=tab_id):
                    build(ctx)
        for callback in ctx.on_built:
            callback(ctx)
    demo.hubtune = ctx  # tests and other tabs reach the context (runs folder, shared components) from the app
    return demo


def theme() -> gr.themes.Base:
    """Gradio's default look with Source Sans Pro at 400 and 700: the 600 file gradio ships holds 55 glyphs, so
    semi-bold text (headings, Markdown bold) mixed it with a fallback font letter by letter ("**ET**A")."""
    return gr.themes.Default(font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif",
                                   "system-ui", "sans-serif"))


def launch_options() -> dict:
    """Address to serve on: env GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, 0.0.0.0 on a Space, else 127.0.0.1:7860."""
    on_space = bool(os.environ.get("SPACE_ID"))
    name = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1")
    return {"server_name": name, "server_port": int(os.environ.get("GRADIO_SERVER_PORT") or 7860)}


def serve_options(demo: gr.Blocks, say=None) -> dict:
    """What `demo.launch` takes besides the address: the upload cap, and the REST endpoint's routes and refusals
    (engine/serving/rest.py) over the app's runs folder, handed to the FastAPI app Gradio builds so one server answers
    both. The endpoint pins its default model now (`say` gets the line naming it); a ConfigError when
    HUBTUNE_API_DEFAULT_MODEL names nothing servable."""
    from gradio.route_utils import API_PREFIX

    from engine.serving import rest
    from engine.runs.jobs import MAX_UPLOAD_MB

    # gradio refuses larger uploads before storing them; the job runner checks the same cap again. Paths under
    # Gradio's API prefix keep Gradio's own error shape: its clients read it.
    api = rest.Api(demo.hubtune.runs_dir)
    if say:
        say(api.default_line())
    return {"max_file_size": f"{int(MAX_UPLOAD_MB)}mb", "app_kwargs": api.server_options(leave=(API_PREFIX,)),
            "theme": theme()}


def main() -> int:
    """Build and serve the app (and its REST endpoint) until interrupted; 2 with one line when a setting is bad."""
    from engine.errors import ConfigError, report

    demo = build_app()
    try:
        options = serve_options(demo, say=print)
    except ConfigError as e:
        return report(e)
    demo.queue(default_concurrency_limit=1).launch(**options, **launch_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
