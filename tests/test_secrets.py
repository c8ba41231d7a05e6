"""Secrets: with a known random token set as HF_TOKEN, a full cycle leaves it nowhere.

Train (a real subprocess started by the app's job runner) with push_to_hub to a local Hub-protocol server, predict
in the app with the pushed repo, trigger errors (push to bob's namespace, a read-only token, a missing repo), then
scan every place a token could end up: all files under the test's folder (runs, train.log with the child's stdout and
stderr, events.jsonl, job.json, the Hub's stored repos and model card, the HF caches), captured log records and
stdout/stderr, every answer and error the app gave, the page HTML and config, and the argv of every process on the
machine while training ran. 0 hits. `repr`/`str` of everything that holds the token masks it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import ROOT  # noqa: F401 - at import: conftest sets HF_HUB_OFFLINE=1, which the hub fixture undoes

from _app_fixtures import serve
from hub_fixtures import ALICE, ALICE_READ, count_secrets, hub  # noqa: F401 - hub is a fixture

REPO = "alice/secret-news"
TRAIN = {"dataset_name": "bundled:bbc_news", "max_train_samples": 96, "max_eval_samples": 40, "max_seq_length": 32,
         "per_device_train_batch_size": 16, "max_steps": 4, "learning_rate": 2e-4, "logging_steps": 1,
         "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "seed": 7, "push_to_hub": True,
         "hub_model_id": REPO}


def _argv_of_every_process() -> list[str]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        out.append("\0".join(proc.info["cmdline"] or []))
    return out


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_full_cycle_leaves_the_token_nowhere(hub, tmp_path, monkeypatch, caplog, capfd):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from huggingface_hub import constants

    import app
    from engine.rundir import RunDir
    from engine.runs.processes import alive, process_tree
    from engine.serving.predictor import shared_predictor
    from ui.train_tab import manager

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # nothing leaves 127.0.0.1
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # the training child's caches stay in tmp_path
    monkeypatch.delenv("SPACE_ID", raising=False)
    runs = tmp_path / "runs"
    seen: list[str] = []  # every text the app or the engine showed us

    with serve(app.build_app(runs_dir=runs)) as url:
        mgr = manager(runs)
        try:
            # 1. train and push: a real `accelerate launch` subprocess, started while HF_TOKEN is set
            name = mgr.submit(TRAIN, "cpu.yaml", name="secret")["name"]
            job = mgr._job(name)
            seen.append(json.dumps(job))
            launcher = job["pid"]
            assert ALICE.encode() in _environ(launcher), "the token must really be in play for the scan to mean anything"
            argvs, machine, deadline = set(), [], time.monotonic() + 240
            while True:
                for pid in process_tree(launcher):
                    try:
                        argvs.add(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
                    except OSError:
                        pass
                if not machine and len(argvs) >= 2:  # launcher and trainer both up: every process on the machine
                    machine = _argv_of_every_process()
                mgr.poll()
                state = mgr.info(name)["state"]
                # the push follows the 'done' record: wait for the process itself to end
                if state in ("done", "failed", "cancelled") and not alive([launcher]):
                    break
                assert time.monotonic() < deadline, (runs / name / "train.log").read_text()[-3000:]
                time.sleep(0.2)
            assert state == "done", (runs / name / "train.log").read_text()[-3000:]
            assert sum("engine.train" in a for a in argvs) >= 2 and machine, argvs
            seen.extend(argvs)
            seen.extend(machine)
            pushes = [e for e in RunDir(runs / name).read_events() if e["type"] == "push"]
            assert pushes and pushes[-1]["ok"], pushes
            assert "README.md" in hub.files("model", REPO) and "model.safetensors" in hub.files("model", REPO)

            # 2. predict in the app with the pushed repo (downloaded from the local Hub into the test's cache)
            client = Client(url, verbose=False, token=False, analytics_enabled=False)
            text = "Shares in the bank rose after it reported record profits and raised its dividend."
            value, note = client.predict(text, REPO, "main", api_name="/predict")
            assert value["label"] == next(iter(shared_predictor().predict_text(str(runs / name), text)))
            seen += [json.dumps(value), note]

            # 3. errors: someone else's namespace, a read-only token, a repo that does not exist
            hub.add_repo("model", "bob/taken", {"README.md": b"bob's\n"})
            errors = []
            for repo, token, fragment in ((("bob/taken", ALICE, "not allowed to push to 'bob/taken'")),
                                          ("alice/ro", ALICE_READ, "read-only"), ("alice/x", ALICE, None)):
                monkeypatch.setenv("HF_TOKEN", token)
                if fragment is None:
                    with pytest.raises(AppError, match="repo 'alice/missing' not found") as e:
                        client.predict(text, "alice/missing", "main", api_name="/predict")
                else:
                    with pytest.raises(AppError, match=fragment) as e:
                        client.predict(name, repo, False, api_name="/push")
                errors.append(str(e.value))
            monkeypatch.setenv("HF_TOKEN", ALICE)
            seen += errors
            assert len(hub.repos[("model", "bob/taken")].commits) == 1

            # 4. the page as any visitor gets it
            for path in ("", "config", "gradio_api/info"):
                seen.append(httpx.get(url + path, timeout=30).text)
        finally:
            manager(runs).stop_scheduler()

    out, err = capfd.readouterr()
    card = hub.files("model", REPO)["README.md"].decode()
    assert REPO in card and "## Hyperparameters" in card
    places = {"files under the test folder": tmp_path, "log records": caplog.text, "stdout": out, "stderr": err,
              "app answers, errors, page, argv": "\n".join(seen), "Hub requests": repr(hub.requests)}
    leaks = {where: count_secrets(what) for where, what in places.items()}
    assert leaks == {where: 0 for where in places}, leaks
    assert (tmp_path / "runs" / name / "train.log").stat().st_size > 0 and list(tmp_path.rglob("events.jsonl"))


def test_repr_and_str_of_everything_holding_a_token_mask_it(monkeypatch):
    from engine.hub.client import HubError, Token, _api, _explain, resolve_token

    monkeypatch.setenv("HF_TOKEN", ALICE)
    tok = resolve_token()
    api = _api(tok, "http://127.0.0.1:9")
    err = _explain(ValueError(f"bad header Bearer {ALICE}"), "push to", "alice/x", None, tok, 1)
    assert isinstance(err, HubError) and tok.reveal() == ALICE
    shown = [repr(tok), str(tok), f"{tok}", repr([tok]), repr({"token": tok}), repr(api), str(api), str(err),
             repr(err), repr(Token(ALICE_READ, "oauth")), logging.Formatter().format(
                 logging.LogRecord("hubtune", logging.INFO, __file__, 1, "token %s", (tok,), None))]
    assert count_secrets("\n".join(shown)) == 0, [s for s in shown if count_secrets(s)]
    assert "***" in repr(tok) and "***" in str(err)
