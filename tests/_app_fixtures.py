"""Fixtures for tests of the launched web app: a runs folder, the served app, a gradio_client, a real browser.

Import the ones a test module uses (`from _app_fixtures import launched_app, client  # noqa: F401`).
`serve(demo)` launches any Blocks on 127.0.0.1 on a free port (prevent_thread_lock) and closes it afterwards,
so other tabs' tests can launch `app.build_app(runs_dir=...)` the same way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patient_url_ok(url: str) -> bool:
    """gradio's launch asks once, with a 3 s timeout, whether the server it has just started answers (it looks for
    notebooks without localhost, and then demands share=True); with both cores busy training in other test workers
    that first answer can take longer, so ask again for up to a minute."""
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=10).status_code < 400:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def serve(demo) -> Iterator[str]:
    """Launch `demo` on 127.0.0.1:<free port> in this process; yield its URL; close it at the end."""
    from unittest import mock

    import app

    demo.queue()
    with mock.patch("gradio.networking.url_ok", patient_url_ok):
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, theme=app.theme())  # the look `python app.py` serves
    try:
        yield url.rstrip("/") + "/"
    finally:
        demo.close()


@contextlib.contextmanager
def serve_app(runs_dir: Path) -> Iterator[str]:
    """The whole app on `runs_dir` (served like `serve`); any run it left starting, running or queued is cancelled
    at the end, so a failing test never leaves training behind."""
    import app
    from ui.train_tab import manager

    with serve(app.build_app(runs_dir=runs_dir)) as url:
        yield url
        mgr = manager(runs_dir)
        mgr.stop_scheduler()
        for info in mgr.list_runs():
            if info["state"] in ("starting", "running", "queued"):
                mgr.cancel(info["name"], grace=2)


@pytest.fixture(scope="session")
def app_runs_dir(tiny_run, tmp_path_factory) -> Path:
    """A runs folder holding the session's finished tiny run as `tiny` (a link: no second training)."""
    runs = tmp_path_factory.mktemp("app_runs")
    (runs / "tiny").symlink_to(tiny_run, target_is_directory=True)
    return runs


@pytest.fixture(scope="session")
def launched_app(app_runs_dir) -> Iterator[str]:
    """The URL of `app.build_app(runs_dir=app_runs_dir)` served for the whole session."""
    import app

    with serve(app.build_app(runs_dir=app_runs_dir)) as url:
        yield url


@pytest.fixture(scope="session")
def client(launched_app):
    """A gradio_client.Client on the launched app (HF_HUB_OFFLINE keeps it off the Hub)."""
    from gradio_client import Client

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return Client(launched_app, verbose=False)


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the session, driven by Playwright from PyPI."""
    from playwright.sync_api import sync_playwright

    deadline = time.time() + 300  # the lead may still be installing it
    while not Path(CHROMIUM).exists() and time.time() < deadline:
        time.sleep(5)
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not installed (apt-get install -y chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_section(header, content, tries: int = 3) -> None:
    """Open a closed accordion by its header until `content` shows. Seen in CI: a click on the header that lands
    while the page is still reflowing (the prediction's own updates) is lost, the accordion stays closed, and an
    upload into it then happens out of sight. A click is repeated only while the content is still hidden."""
    for _ in range(tries):
        if content.is_visible():
            return
        header.click()
        with contextlib.suppress(Exception):
            content.wait_for(state="visible", timeout=20_000)
    content.wait_for(state="visible")


def upload_into(container, path) -> None:
    """Set a file on the gradio File inside `container` and wait until its upload has finished: the File then lists
    it as a row with a download link named after it. (While uploading it shows "Uploading 1 file... <name>" for a
    moment; the finished row splits the name into stem and extension, so the whole name as text is only ever seen in
    that moment, which made a wait for it flaky: it passed only when a poll landed inside the moment.)"""
    container.locator("input[type=file]").set_input_files(str(path))
    container.locator(f'a[download="{Path(path).name}"]').wait_for()
