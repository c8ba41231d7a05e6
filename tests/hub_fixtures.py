"""Shared set-up for Hub tests: a local Hub server with users and tokens, and the process pointed at it."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

import pytest

from hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
# random per session, so a leak found by the scans cannot be a coincidence
ALICE = "hf_alice" + secrets.token_hex(16)
ALICE_READ = "hf_aliceread" + secrets.token_hex(16)
BOB = "hf_bob" + secrets.token_hex(16)
SECRETS = (ALICE, ALICE_READ, BOB)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running local Hub; HF_ENDPOINT points at it, HF_TOKEN is alice's write token, retries are fast."""
    from huggingface_hub import constants

    server = HubServer(tmp_path / "hub", tokens={ALICE: ("alice", "write"), ALICE_READ: ("alice", "read"),
                                                 BOB: ("bob", "write")}, orgs={"acme": {"alice"}}).start()
    # huggingface_hub froze these at import; monkeypatch puts the originals back after the test
    for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET"):
        monkeypatch.setattr(constants, name, getattr(constants, name))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # never the user's real cache
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-login" / "token"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", ALICE)
    monkeypatch.setenv("HUBTUNE_HUB_RETRIES", "3")
    monkeypatch.setenv("HUBTUNE_HUB_BACKOFF", "0.02")
    yield server
    server.stop()


def subprocess_env(server: HubServer, tmp_path: Path, token: str | None = ALICE, **extra) -> dict:
    """Environment for a child process talking to `server` (HF_ENDPOINT set before huggingface_hub is imported)."""
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"),
           "HUBTUNE_HUB_RETRIES": "2", "HUBTUNE_HUB_BACKOFF": "0.02", "PYTHONPATH": str(ROOT), **extra}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def tree_digest(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (to prove a directory was left untouched)."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def count_secrets(*places) -> int:
    """How often any test token occurs in the given texts, bytes, files or directory trees."""
    found = 0
    for place in places:
        if isinstance(place, (str, bytes)) and not (isinstance(place, str) and os.path.exists(place)):
            blobs = [place.encode() if isinstance(place, str) else place]
        else:
            place = Path(place)
            blobs = [p.read_bytes() for p in ([place] if place.is_file() else place.rglob("*")) if p.is_file()]
        for blob in blobs:
            found += sum(blob.count(s.encode()) for s in SECRETS)
    return found


def python(*args) -> list[str]:
    return [sys.executable, *map(str, args)]
