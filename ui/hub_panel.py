"""'Share on the Hub' panel of the Fine-tuning tab: push the selected finished run as a model repo.

Whose token pushes: on a Hugging Face Space (env SYSTEM=spaces, SPACE_ID) only the visitor's own, from "Sign in with Hugging Face"
(gr.LoginButton; Space OAuth with the `write-repos` scope), injected by Gradio per request as `gr.OAuthToken`;
the Space's own HF_TOKEN never pushes for a visitor. Locally, engine.hub takes HF_TOKEN or the stored
`hf auth login`. The token only travels from Gradio's request to engine.hub (which wraps it in `Token`): it is never
a component value, a log line, part of the page, or written to a file, and pushing leaves the run directory as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import gradio as gr

from engine.hub.client import HubError, check_push_id
from ui.common import message, show_errors, ui_errors

SIGN_IN = "Sign in with Hugging Face to push"


def on_space() -> bool:
    """True inside a Hugging Face Space, where pushes need the visitor's sign-in.

    The same test Gradio makes (SYSTEM=spaces and SPACE_ID, both set by the platform), so the sign-in button only
    exists where Gradio serves the real OAuth routes, never its local mock that would sign in as the machine's login.
    """
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def suggest_repo(run_name: str | None, namespace: str | None) -> str:
    """'user/<run-name>' when the namespace is known cheaply, else '' (the user types it)."""
    return f"{namespace}/{run_name}" if run_name and namespace else ""


def _namespace(profile) -> str | None:
    """The account a push would land in: the signed-in visitor on a Space, else the local token's owner."""
    if on_space():
        return getattr(profile, "username", None)  # never the Space owner's HF_TOKEN
    from engine.hub.client import account_name

    return account_name()


def push(run_dir: Path, repo_id: str, private: bool, oauth_token: gr.OAuthToken | None) -> str:
    """Push `run_dir` to `repo_id`; returns the result Markdown with the repo URL. Raises gr.Error in one line."""
    from engine.hub.push import push_run

    if on_space():
        if oauth_token is None or not getattr(oauth_token, "token", None):
            raise gr.Error(SIGN_IN, print_exception=False)
        token, use_stored = oauth_token, False
    else:
        token, use_stored = None, True  # HF_TOKEN or the stored login, resolved by engine.hub at call time
    try:
        url = push_run(run_dir, repo_id, token=token, private=bool(private), use_stored_token=use_stored)
    except HubError as e:
        raise gr.Error("; ".join(e.problems), print_exception=False) from None
    shown = urlsplit(url).path.strip("/") or url  # the Hub id, e.g. alice/bbc
    return message(f"Pushed {'privately ' if private else ''}to [{shown}]({url})\n\n"
                   f"Use `{shown}` as the model in the Prediction tab, or as a base model here.")


def build(run_picker: gr.components.Component, run_dir_of: Callable[[str], Path]) -> dict:
    """Build the panel (inside the finished-run area) for the run chosen in `run_picker`; returns its components.

    `run_dir_of(name)` maps the picker's run name to its directory (the job runner's own check of the name).
    """
    c: dict = {}
    with gr.Accordion("Share on the Hub", open=True, elem_id="hub-panel"):
        if on_space():
            # only on a Space: elsewhere Gradio would mock the sign-in with the machine's own login
            c["login"] = gr.LoginButton(elem_id="hub-login")
        with gr.Row():
            c["repo"] = gr.Textbox(label="repo", placeholder="user/name or org/name", scale=4, elem_id="hub-repo",
                                   info="Created if missing; an existing repo gets a new commit.")
            c["private"] = gr.Checkbox(label="private", value=False, scale=1, elem_id="hub-private")
            c["push"] = gr.Button("Push to the Hub", variant="primary", scale=1, elem_id="hub-push")
        c["result"] = gr.Markdown(elem_id="hub-result")
    # the last suggestion made: a repo name the user typed is never overwritten
    c["suggested"] = gr.State("")

    def suggest(run_name: str | None, current: str | None, last: str, profile: gr.OAuthProfile | None):
        if (current or "").strip() not in ("", last):
            return gr.update(), last
        new = suggest_repo(run_name, _namespace(profile))
        return new, new

    run_picker.change(suggest, [run_picker, c["repo"], c["suggested"]], [c["repo"], c["suggested"]],
                      api_name="hub_suggest_repo", show_progress="hidden")

    @ui_errors(toast=False)
    def on_push(run_name: str | None, repo_id: str, private: bool, oauth_token: gr.OAuthToken | None):
        if not run_name:
            raise gr.Error("select a finished run first", print_exception=False)
        try:
            check_push_id(repo_id)  # a bad name is said first, as engine.hub push says it, whichever run is picked
        except HubError as e:
            raise gr.Error("; ".join(e.problems), print_exception=False) from None
        try:
            run_dir = run_dir_of(run_name)
        except ValueError as e:  # the job runner refuses names outside the runs folder
            raise gr.Error(str(e), print_exception=False) from None
        return push(run_dir, repo_id, private, oauth_token)

    done = c["push"].click(on_push, [run_picker, c["repo"], c["private"]], c["result"], api_name="push",
                           concurrency_id="hub_push")
    show_errors(done, on_push, c["result"])  # a refused push replaces the last push's line
    return c
