"""`python -m space.publish` against the local Hub server, and the Space README's YAML header."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from hub_fixtures import ROOT, count_secrets, hub, python, subprocess_env  # noqa: F401

FIELDS = ("title", "emoji", "sdk", "sdk_version", "app_file", "hf_oauth", "hf_oauth_scopes", "suggested_hardware")


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _app_copy(tmp_path):
    """A copy of the project as publish sees it, plus clutter that must not be uploaded."""
    root = tmp_path / "app"
    for folder in ("engine", "accelerate_configs", "ui"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "space").mkdir(parents=True)
    shutil.copy(ROOT / "space" / "README.md", root / "space" / "README.md")
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    if (ROOT / "app.py").is_file():
        shutil.copy(ROOT / "app.py", root / "app.py")
    else:  # the app is written in parallel; publish only needs the file to exist
        (root / "app.py").write_text("import gradio as gr\n\ndemo = gr.Blocks()\n")
    (root / "ui").mkdir(exist_ok=True)
    (root / "engine" / "__pycache__").mkdir(exist_ok=True)
    (root / "engine" / "__pycache__" / "hub.cpython-311.pyc").write_bytes(b"\0")
    (root / "engine" / ".secret.env").write_text("x")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")
    (root / "runs").mkdir()
    (root / "runs" / "model.safetensors").write_bytes(b"\0" * 10)
    return root


def _expected(root) -> set[str]:
    out = {"app.py", "requirements.txt", "README.md"}
    for folder in ("engine", "accelerate_configs", "ui"):
        out |= {p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    return out


def test_requirements_give_the_sdk_version():
    from space.publish import gradio_version

    assert gradio_version("torch==2.13.0\ngradio>=6.31,<7\n") == "6.31.0"
    assert gradio_version("gradio[oauth]==5.4.1\n") == "5.4.1"
    assert gradio_version("gradio_client>=1\ngradio~=6.2\n") == "6.2.0"
    from engine.hub.client import HubError

    with pytest.raises(HubError, match="no `gradio==X`"):
        gradio_version("gradio_client>=1\n")


def test_space_readme_header_matches_requirements():
    from space.publish import gradio_version

    meta = _header((ROOT / "space" / "README.md").read_text(encoding="utf-8"))
    assert all(meta.get(f) not in (None, "") for f in FIELDS), meta
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["hf_oauth"] is True
    assert "write-repos" in meta["hf_oauth_scopes"]
    assert str(meta["sdk_version"]) == gradio_version((ROOT / "requirements.txt").read_text())


def test_publish_uploads_exactly_the_app(hub, tmp_path):
    from space.publish import gradio_version, publish

    root = _app_copy(tmp_path)
    url = publish("alice/hubtune-app", root=root)
    assert url == f"{hub.url}/spaces/alice/hubtune-app"
    repo = hub.repos[("space", "alice/hubtune-app")]
    assert repo.sdk == "gradio" and len(repo.commits) == 2  # created as a Gradio Space, then one commit
    files = hub.files("space", "alice/hubtune-app")
    assert set(files) == _expected(root) | {".gitattributes"}
    assert files["engine/hub/push.py"] == (root / "engine" / "hub" / "push.py").read_bytes()
    meta = _header(files["README.md"].decode())
    assert all(meta.get(f) not in (None, "") for f in FIELDS)
    assert meta["sdk_version"] == gradio_version((root / "requirements.txt").read_text())
    assert count_secrets(hub.root) == 0


def test_publish_refuses_without_app_or_with_a_bad_name(hub, tmp_path):
    from engine.hub.client import HubError
    from space.publish import publish

    root = _app_copy(tmp_path)
    with pytest.raises(HubError, match="not a valid repo name"):
        publish("alice/bad name", root=root)
    (root / "app.py").unlink()
    with pytest.raises(HubError, match="app.py: not found"):
        publish("alice/hubtune-app", root=root)
    assert hub.requests == []


def test_publish_cli(hub, tmp_path):
    env = subprocess_env(hub, tmp_path)
    r = subprocess.run(python("-m", "space.publish", "--space", "alice/x y"), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().startswith("hubtune: error: space: 'alice/x y'")
    assert len(r.stderr.strip().splitlines()) == 1
    if (ROOT / "app.py").is_file():
        r = subprocess.run(python("-m", "space.publish", "--space", "alice/cli-space", "--private"), cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"{hub.url}/spaces/alice/cli-space"
        assert hub.repos[("space", "alice/cli-space")].private
    else:
        r = subprocess.run(python("-m", "space.publish", "--space", "alice/cli-space"), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "app.py: not found" in r.stderr
    assert count_secrets(r.stdout, r.stderr) == 0
