"""The Hub round trip through the UI against a local Hub-protocol server (127.0.0.1 only).

A real browser pushes a finished run from the Fine-tuning tab ("Share on the Hub") and pulls it back by Hub id at a
commit in the Prediction tab; the label matches the local model's. Then every place a token could leak (page HTML,
run directory, the server's stored repos, the pulled cache, stdout/stderr, log records) is scanned: 0 hits.
The Space path goes through gradio_client: without a signed-in user the push is refused; with bob's OAuth token the
push is bob's alone although HF_TOKEN is alice's. Screenshots go to artifacts/hub_*.png.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest
from conftest import ROOT  # at import: conftest sets HF_HUB_OFFLINE=1, which the hub fixture undoes per test

from _app_fixtures import serve
from hub_fixtures import ALICE, BOB, count_secrets, hub, tree_digest  # noqa: F401 - hub is a fixture

ART = ROOT / "artifacts"
RUN = "bbc-tiny"
TEXT = "The striker scored twice in the second half as the champions came from behind to win 3-2 at Anfield."


@pytest.fixture
def served(hub, tiny_run, tmp_path, monkeypatch):
    """The whole app on a runs folder holding a copy of the session's finished run, talking to the local Hub."""
    from huggingface_hub import constants

    import app
    from ui.train_tab import manager

    # gradio_client's telemetry would go to the Hub endpoint; nothing leaves 127.0.0.1 here
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("SPACE_ID", raising=False)
    runs_dir = tmp_path / "runs"
    shutil.copytree(tiny_run, runs_dir / RUN, ignore=shutil.ignore_patterns("checkpoint*"))
    # the job runner lists run folders it knows; a finished run needs only the record, no process
    (runs_dir / RUN / "job.json").write_text(json.dumps({"command": "(copied)", "created_at": time.time(),
                                                         "accelerate_config": "cpu.yaml"}))
    with serve(app.build_app(runs_dir=runs_dir)) as url:
        yield url, runs_dir / RUN
        manager(runs_dir).stop_scheduler()


def _record_users(server) -> list:
    """Wrap the server's token check so each request's authenticated user (or None) is logged, in order."""
    seen, check = [], server.user

    def user(headers):
        who = check(headers)
        seen.append(who[0] if who else None)
        return who

    server.user = user
    return seen


def _only_text_inputs(page):
    """The page shows the text input and none of the image input (drop box, buttons, saliency), one hint."""
    assert page.locator("#predict-text").is_visible()
    for hidden in ("#predict-image-group", "#predict-image", "#predict-image-button", "#predict-sketch-column"):
        assert not page.locator(hidden).is_visible(), hidden
    assert not page.get_by_text("which pixels").is_visible()
    assert page.get_by_text("No examples for").and_(page.locator(":visible")).count() == 1


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"hub_{name}.png"), full_page=True)


def test_push_from_finetuning_tab_then_pull_by_id_in_prediction_tab(served, hub, browser, caplog, capfd):
    from engine.serving.predictor import shared_predictor

    caplog.set_level(logging.DEBUG)
    assert count_secrets(f"x{ALICE}y") == 1  # the scanner finds what it is meant to find
    url, run_dir = served
    repo_id = "alice/hubtune-bbc-news"
    users = _record_users(hub)
    context = hub_page = None
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 1400})
        hub_page = page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("tab", name="Fine-tuning").click()
        page.wait_for_selector("#run-state[data-state='done']")
        page.wait_for_selector("#train-confusion img")  # the view has cached its plot; the folder is settled now
        before = tree_digest(run_dir)
        repo_box = page.locator("#hub-repo textarea")
        # the suggestion comes from whoami on the local Hub with HF_TOKEN (alice's)
        page.wait_for_function("document.querySelector('#hub-repo textarea').value === 'alice/bbc-tiny'")
        assert not page.locator("#hub-login").count()  # no sign-in button outside a Space
        repo_box.fill(repo_id)
        page.wait_for_timeout(2_500)  # a refresh tick of the run view must not overwrite what the user typed
        assert repo_box.input_value() == repo_id
        page.locator("#hub-push").click()
        page.wait_for_function("(document.querySelector('#hub-result')?.innerText || '').includes('Pushed')")
        link = page.locator("#hub-result a")
        assert link.get_attribute("href") == f"{hub.url}/{repo_id}" and link.inner_text() == repo_id
        _shot(page, "1_pushed")

        repo = hub.repos[("model", repo_id)]
        pushed = hub.files("model", repo_id)
        assert pushed["model.safetensors"] == (run_dir / "model" / "model.safetensors").read_bytes()
        assert {"README.md", "config.json", "config.yaml", "metrics.json"} <= set(pushed)
        assert not repo.private and len(repo.commits) == 2  # the repo's creation + one commit with everything
        assert set(users) == {"alice"}  # every request carried HF_TOKEN's user, none went anonymous
        assert tree_digest(run_dir) == before  # pushing changed nothing in the run directory

        # Prediction tab: the pushed repo by Hub id, at the exact commit that was pushed
        sha = repo.branches["main"]
        expected = next(iter(shared_predictor().predict(str(run_dir), [TEXT])[0]))
        page.get_by_role("tab", name="Prediction").click()
        model_box = page.locator("#predict-model input")
        model_box.fill(repo_id)
        model_box.press("Enter")
        page.locator("#predict-revision textarea").fill(sha)
        page.wait_for_function("(document.querySelector('#predict-model-info')?.innerText || '').includes('Hub model')")
        # its config.json says text classification: the text input alone, as for a local text run
        assert "text-classification" in page.locator("#predict-model-info").inner_text()
        page.wait_for_function("(document.querySelector('#predict-examples-hint')?.innerText || '')"
                               ".includes('No examples')")
        _only_text_inputs(page)
        page.locator("#predict-text textarea").fill(TEXT)
        page.locator("#predict-button").click()
        page.wait_for_function(f"(document.querySelector('#predict-note')?.innerText || '').includes('{sha}')",
                               timeout=120_000)
        label = page.locator("#predict-label .output-class").inner_text().strip()
        assert label == expected
        note = page.locator("#predict-note").inner_text()
        assert note.startswith(f"{repo_id} @ {sha}"), note
        assert ("GET", f"/{repo_id}/resolve/{sha}/model.safetensors", 200) in hub.requests  # pulled, not local
        _only_text_inputs(page)  # still so after the model has loaded
        _shot(page, "2_pulled")
        html = page.content()

        # a refused push replaces the last push's line: no "Pushed" left under the refusal
        page.get_by_role("tab", name="Fine-tuning").click()
        repo_box.fill("alice/not a repo name")
        page.locator("#hub-push").click()
        page.wait_for_function("(document.querySelector('#hub-result')?.innerText || '').startsWith('✗')")
        assert "Pushed" not in page.locator("#hub-result").inner_text()
        _shot(page, "3_refused")
    finally:
        if context is not None:
            if hub_page is not None:
                _shot(hub_page, "last")
            context.close()

    assert repo_id in html and "Pushed" in html
    out, err = capfd.readouterr()
    assert count_secrets(html) == 0
    assert count_secrets(run_dir) == 0
    assert count_secrets(hub.root) == 0  # every blob of every stored repo, the pushed one included
    assert count_secrets(run_dir.parent.parent) == 0  # the whole test folder: runs, Hub storage, pulled cache
    assert count_secrets(out, err, caplog.text) == 0
    assert count_secrets("\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)) == 0


def test_space_push_needs_sign_in_and_uses_only_the_visitors_token(served, hub, monkeypatch, caplog, capfd):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    caplog.set_level(logging.DEBUG)
    url, run_dir = served
    # what the platform sets on a Space; HF_TOKEN stays alice's: the Space owner's secret
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "alice/hubtune")
    users = _record_users(hub)
    before = tree_digest(run_dir)

    anonymous = Client(url, verbose=False, analytics_enabled=False)
    with pytest.raises(AppError, match="Sign in with Hugging Face to push"):
        anonymous.predict(RUN, "bob/space-push", False, api_name="/push")
    assert users == [] and not hub.requests and ("model", "bob/space-push") not in hub.repos

    # gradio injects the caller's token as gr.OAuthToken, as it does for a signed-in Space visitor
    bob = Client(url, verbose=False, analytics_enabled=False, oauth_token=BOB)
    result = bob.predict(RUN, "bob/space-push", True, api_name="/push")
    assert f"]({hub.url}/bob/space-push)" in result and "privately" in result
    assert hub.repos[("model", "bob/space-push")].private
    assert users and set(users) == {"bob"}  # bob's token only: never HF_TOKEN (alice)

    # bob cannot push into alice's namespace although the Space's HF_TOKEN could
    del users[:]
    with pytest.raises(AppError, match="not allowed to push to 'alice/space-push'"):
        bob.predict(RUN, "alice/space-push", False, api_name="/push")
    assert set(users) == {"bob"} and ("model", "alice/space-push") not in hub.repos

    # bob's sign-in stays with bob: the next anonymous visitor is refused again, with no request sent
    del users[:]
    with pytest.raises(AppError, match="Sign in with Hugging Face to push"):
        anonymous.predict(RUN, "bob/space-push-2", False, api_name="/push")
    assert users == []

    out, err = capfd.readouterr()
    assert tree_digest(run_dir) == before
    assert count_secrets(run_dir) == count_secrets(hub.root) == count_secrets(out, err, caplog.text) == 0


def test_login_button_only_on_a_space(tmp_path, monkeypatch):
    import gradio as gr
    import gradio.oauth

    import app
    from ui.train_tab import manager

    def login_buttons():
        demo = app.build_app(runs_dir=tmp_path / "runs")
        return [b for b in demo.blocks.values() if isinstance(b, gr.LoginButton)]

    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    try:
        assert login_buttons() == []  # locally: no sign-in (Gradio's mock would sign in as this machine's login)
        monkeypatch.setenv("SPACE_ID", "alice/hubtune")
        assert login_buttons() == []  # SPACE_ID alone is not a Space
        # a Space with `hf_oauth: true`: the platform sets these (read by gradio.oauth at import); no request is made
        monkeypatch.setenv("SYSTEM", "spaces")
        for name, value in {"OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "not-a-secret",
                            "OAUTH_SCOPES": "openid profile write-repos",
                            "OPENID_PROVIDER_URL": "http://127.0.0.1:9"}.items():
            monkeypatch.setattr(gradio.oauth, name, value)
        assert len(login_buttons()) == 1
    finally:
        manager(tmp_path / "runs").stop_scheduler()
