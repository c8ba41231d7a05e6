"""engine.hub against a local Hub-protocol server: the real huggingface_hub client, both upload paths, faults."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess

import pytest
from conftest import train_args  # at import: importing conftest sets HF_HUB_OFFLINE=1, which the hub fixture undoes

from hub_fixtures import ALICE, ALICE_READ, BOB, ROOT, count_secrets, hub, python, subprocess_env, tree_digest  # noqa: F401

RUN_FILES = {"README.md", "config.yaml", "metrics.json", "confusion_matrix.png", "loss_curve.png"}


def _texts(run, n=24):
    lines = (run / "eval_predictions.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def _logits(model_dir, texts):
    import torch

    from engine.tasks.text_classification.models import load_for_inference

    model, tok = load_for_inference(model_dir)
    with torch.inference_mode():
        return model(**tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits


def test_push_then_pull_round_trip_regular_uploads(tiny_run, hub, tmp_path, caplog, capfd):
    """Xet-era path: every file goes in the NDJSON commit; pulled model predicts exactly like the local one."""
    import torch
    from huggingface_hub import ModelCard

    from engine.hub.client import pull
    from engine.hub.push import push_run

    caplog.set_level(logging.DEBUG)
    before = tree_digest(tiny_run)
    url = push_run(tiny_run, "alice/tiny-news")
    assert url == f"{hub.url}/alice/tiny-news"
    repo = hub.repos[("model", "alice/tiny-news")]
    assert len(repo.commits) == 2  # the repo's initial commit + exactly one commit with everything
    pushed = hub.files("model", "alice/tiny-news")
    model_files = {p.name for p in (tiny_run / "model").iterdir()}
    assert set(pushed) == model_files | RUN_FILES | {".gitattributes"}
    assert pushed["model.safetensors"] == (tiny_run / "model" / "model.safetensors").read_bytes()
    assert pushed["confusion_matrix.png"][:8] == pushed["loss_curve.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert not any("lfs" in path for _, path, _ in hub.requests)

    cache = tmp_path / "empty-cache"
    local = pull("alice/tiny-news", cache_dir=cache)
    assert local.is_relative_to(cache) and not list(local.glob("*.bin"))
    texts = _texts(tiny_run)
    ours, theirs = _logits(tiny_run / "model", texts), _logits(local, texts)
    assert torch.equal(ours, theirs) and torch.equal(ours.argmax(-1), theirs.argmax(-1))

    card = ModelCard.load("alice/tiny-news")  # through hf_hub_download from the local Hub
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == round(metrics["validation"]["accuracy"], 4)
    assert results["f1"] == round(metrics["validation"]["f1"], 4)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert (card.data.pipeline_tag, card.data.library_name, card.data.license) == \
        ("text-classification", "transformers", "apache-2.0")
    assert "hubtune" in card.data.tags
    for section in ("## Per-class report", "## Hyperparameters", "python -m engine.train --config config.yaml",
                    "loss_curve.png", "transformers "):
        assert section in card.text
    assert tree_digest(tiny_run) == before  # pushing changes nothing in the run
    out, err = capfd.readouterr()
    assert count_secrets(tiny_run, hub.root, local, cache, caplog.text, out, err,
                         repr(hub.requests)) == 0


@pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning")  # inside huggingface_hub's LFS PUT
def test_lfs_upload_path_and_branch_revision(tiny_run, hub, tmp_path, monkeypatch):
    """Xet disabled: large files go through the LFS batch API + PUT; a new branch is created; pull by commit."""
    from huggingface_hub import constants

    from engine.hub.client import pull
    from engine.hub.push import push_run

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    hub.upload_mode = "lfs"
    url = push_run(tiny_run, "acme/news", revision="dev", private=True)  # alice writes to her org
    assert url == f"{hub.url}/acme/news/tree/dev"
    repo = hub.repos[("model", "acme/news")]
    assert repo.private and set(repo.branches) == {"main", "dev"}
    head = repo.commits[repo.branches["dev"]]["files"]
    assert head["model.safetensors"]["lfs"] and head["confusion_matrix.png"]["lfs"]
    methods = [(m, p.split("/")[-1]) for m, p, _ in hub.requests]
    assert ("POST", "batch") in methods and sum(m == "PUT" for m, _ in methods) >= 2
    assert "model.safetensors" not in hub.files("model", "acme/news", "main")  # main untouched

    sha = repo.branches["dev"]
    local = pull("acme/news", revision=sha, cache_dir=tmp_path / "cache")
    assert local.name == sha
    assert (local / "model.safetensors").read_bytes() == (tiny_run / "model" / "model.safetensors").read_bytes()
    assert count_secrets(hub.root, tmp_path / "cache") == 0


def test_faults_are_clear_bounded_and_a_later_push_succeeds(tiny_run, hub, monkeypatch, caplog):
    from engine.hub.client import HubError
    from engine.hub.push import push_run

    caplog.set_level(logging.WARNING, logger="hubtune")
    before = tree_digest(tiny_run)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set; unset it"):
        push_run(tiny_run, "alice/flaky")
    assert hub.requests == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # the endpoint is down: a few quick attempts, then one line naming the endpoint
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubError, match=r"127\.0\.0\.1:9 failed 3 time\(s\).*HF_ENDPOINT"):
        push_run(tiny_run, "alice/flaky")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    # 500 twice, then OK: retried with backoff, and the push completes
    hub.fail_next(2, 500)
    caplog.clear()
    assert push_run(tiny_run, "alice/flaky") == f"{hub.url}/alice/flaky"
    assert [s for _, p, s in hub.requests if p == "/api/whoami-v2"][:3] == [500, 500, 200]
    assert caplog.text.count("transient Hub error") == 2
    assert "model.safetensors" in hub.files("model", "alice/flaky")
    # a permanent 5xx is bounded too
    hub.fail_next(10, 503)
    with pytest.raises(HubError, match=r"failed 3 time\(s\) \(HTTP 503\)"):
        push_run(tiny_run, "alice/flaky")
    hub._faults.clear()
    hub.fail_next(1, 409)
    with pytest.raises(HubError, match="conflict on 'alice/flaky'.*push again"):
        push_run(tiny_run, "alice/flaky")
    assert tree_digest(tiny_run) == before


@pytest.mark.parametrize("name", ["bad name/x", "a/b/c", "", "-x/y", "alice/" + "n" * 120, "alice/x.git"])
def test_invalid_repo_names_fail_before_any_request(tiny_run, hub, name):
    from engine.hub.client import HubError
    from engine.hub.push import push_run

    with pytest.raises(HubError, match="not a valid repo name"):
        push_run(tiny_run, name)
    assert hub.requests == []


def test_token_problems(tiny_run, hub, monkeypatch):
    from engine.hub.client import HubError
    from engine.hub.push import push_run

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token.*HF_TOKEN"):
        push_run(tiny_run, "alice/x")
    assert hub.requests == []
    monkeypatch.setenv("HF_TOKEN", ALICE_READ)
    with pytest.raises(HubError, match="read-only"):
        push_run(tiny_run, "alice/x")
    monkeypatch.setenv("HF_TOKEN", "hf_expired0000000000000000")
    with pytest.raises(HubError, match="rejected the token \\(HF_TOKEN\\) as invalid or expired"):
        push_run(tiny_run, "alice/x")
    assert ("model", "alice/x") not in hub.repos


def test_someone_elses_repo_is_refused_and_left_alone(tiny_run, hub):
    from engine.hub.client import HubError
    from engine.hub.push import push_run

    hub.add_repo("model", "bob/news", {"README.md": b"bob's model\n"})
    hub.add_repo("model", "bob/secret", {"README.md": b"private\n"}, private=True)
    for repo in ("bob/news", "bob/secret"):
        with pytest.raises(HubError, match=f"not allowed to push to '{repo}'.*another user"):
            push_run(tiny_run, repo)
        assert len(hub.repos[("model", repo)].commits) == 1
    # an explicit token (a signed-in user's) wins over HF_TOKEN, and is never taken from the environment when
    # the caller forbids it (a Space must not push for a visitor with its own HF_TOKEN)
    assert push_run(tiny_run, "bob/news", token=BOB).endswith("bob/news")
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_run(tiny_run, "alice/y", use_stored_token=False)


def test_pull_errors(hub, tmp_path, monkeypatch):
    from engine.hub.client import HubError, pull

    hub.add_repo("model", "alice/small", {"config.json": b"{}", "pytorch_model.bin": b"pickle!", "a.safetensors": b"x"})
    with pytest.raises(HubError, match="revision 'nope' not found in 'alice/small'"):
        pull("alice/small", revision="nope", cache_dir=tmp_path / "c")
    with pytest.raises(HubError, match="repo 'alice/missing' not found"):
        pull("alice/missing", cache_dir=tmp_path / "c")
    hub.fail_next(2, 502)
    local = pull("alice/small", cache_dir=tmp_path / "c")
    assert sorted(p.name for p in local.iterdir()) == ["a.safetensors", "config.json"]  # never pickle weights
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        pull("alice/other", cache_dir=tmp_path / "c")
    assert len(hub.requests) == n


def test_token_wrapper_and_precedence(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from engine.hub.client import Token, resolve_token

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setenv("HF_TOKEN", ALICE)
    tok = resolve_token()
    assert (tok.reveal(), tok.source) == (ALICE, "HF_TOKEN")
    assert ALICE not in repr(tok) + str(tok) + f"{tok}" + repr([tok])
    with pytest.raises(TypeError):
        pickle.dumps(tok)

    class OAuthToken:  # the shape of gr.OAuthToken
        token = ALICE_READ

    assert resolve_token(OAuthToken()).reveal() == ALICE_READ and resolve_token(OAuthToken()).source == "oauth"
    assert resolve_token("explicit").reveal() == "explicit"
    assert resolve_token(None, use_stored_token=False) is None
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "token").write_text("hf_stored_login")
    assert (resolve_token().reveal(), resolve_token().source) == ("hf_stored_login", "login")
    assert isinstance(resolve_token(tok), Token)


def test_retries_on_timeouts_are_bounded(monkeypatch):
    import httpx2

    from engine.hub.client import HubError, _call

    monkeypatch.setenv("HUBTUNE_HUB_RETRIES", "3")
    monkeypatch.setenv("HUBTUNE_HUB_BACKOFF", "0.01")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise httpx2.ReadTimeout("slow")
        return "ok"

    assert _call(flaky, "push to", repo_id="a/b") == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(HubError, match=r"failed 3 time\(s\) \(ConnectTimeout\)"):
        _call(lambda: calls.append(1) or (_ for _ in ()).throw(httpx2.ConnectTimeout("x")), "push to", repo_id="a/b")
    assert len(calls) == 3


def test_cli_push_and_pull(tiny_run, hub, tmp_path):
    """The shell path: token from HF_TOKEN only, URL on stdout, one error line and exit 2 on bad input."""
    env = subprocess_env(hub, tmp_path)
    push = subprocess.run(python("-m", "engine.hub", "push", tiny_run, "--repo", "alice/cli-news", "--revision",
                                 "exp1"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert push.returncode == 0, push.stderr
    assert push.stdout.strip() == f"{hub.url}/alice/cli-news/tree/exp1"
    sha = hub.repos[("model", "alice/cli-news")].branches["exp1"]
    pulled = subprocess.run(python("-m", "engine.hub", "pull", "alice/cli-news", "--revision", sha, "--cache-dir",
                                   tmp_path / "cli-cache"), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith(sha) and (tmp_path / "cli-cache").is_dir()
    bad = [("push", tiny_run, "--repo", "not a repo"), ("push", tiny_run, "--repo", "alice/x", "--token", ALICE),
           ("pull", "alice/cli-news", "--revision", "nope", "--cache-dir", tmp_path / "c2"), ("fetch", "x")]
    for args in bad:
        r = subprocess.run(python("-m", "engine.hub", *args), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.startswith("hubtune: error:")]
        assert r.returncode == 2 and len(lines) == 1, (args, r.stderr)
    assert count_secrets(push.stdout, push.stderr, pulled.stdout, pulled.stderr, hub.root, tiny_run) == 0


def test_push_to_hub_from_training_config(tiny_run, hub, tmp_path):
    """A pushed repo at a revision is a base model; push_to_hub pushes at each checkpoint and at the end; a failed
    push leaves the run done."""
    from engine.hub.push import push_run
    from engine.rundir import RunDir
    from engine.training.run import main

    push_run(tiny_run, "alice/base")
    sha = hub.repos[("model", "alice/base")].branches["main"]
    out = tmp_path / "run"
    extra = ["--model_name_or_path", "alice/base", "--model_revision", sha, "--max_steps", 4, "--max_train_samples", 64, "--max_eval_samples", 32, "--eval_steps", 2,
             "--save_steps", 3, "--push_to_hub", "true", "--hub_model_id", "alice/trained",
             "--hub_push_checkpoints", "true"]
    assert main(train_args(out, *extra)) == 0
    run = RunDir(out)
    pushes = [e for e in run.read_events() if e["type"] == "push"]
    assert [(e["step"], e["ok"], e["final"]) for e in pushes] == [(3, True, False), (4, True, True)]
    repo = hub.repos[("model", "alice/trained")]
    assert len(repo.commits) == 3 and "README.md" in hub.files("model", "alice/trained")
    status = run.read_status()  # done, and (only after the final push) on the Hub: the UI shows where
    assert status["state"] == "done" and status["hub_push"] == "pushed" and "alice/trained" in status["hub_url"]
    from ui.run_view import progress_html

    assert "on the Hub:" in progress_html({"name": "run", **status})
    # the same run pushed to a repo it may not write: logged as a failed push, the run stays done
    from engine.config import TrainConfig
    from engine.training.checkpoint import push

    hub.add_repo("model", "bob/taken", {"README.md": b"x"})
    cfg = TrainConfig.load(run.config)
    cfg.hub_model_id = "bob/taken"
    push(cfg, run, 4)
    last = run.read_events()[-1]
    assert last["type"] == "push" and not last["ok"] and "not allowed" in last["error"]
    status = run.read_status()
    assert status["hub_push"] == "failed" and "not allowed" in status["hub_error"]
    assert "Hub push failed: " in progress_html({"name": "run", **status})
    assert run.is_finished() and count_secrets(out, hub.root, tmp_path / "hf-cache") == 0
    assert (tmp_path / "hf-cache" / "models--alice--base" / "snapshots" / sha / "model.safetensors").exists()
    import yaml

    assert yaml.safe_load(run.config.read_text())["model_revision"] == sha
