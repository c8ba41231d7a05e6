"""Upload this app to a Hugging Face Space in one commit.

    python -m space.publish --space user/name [--private]

Uploads app.py, ui/, engine/, accelerate_configs/, requirements.txt and space/README.md as the Space's README.md,
whose `sdk_version` is set from the gradio requirement so the Space runs the gradio version the app was built
for. The token comes from HF_TOKEN or `hf auth login`, never from the command line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from engine.errors import CliParser, ConfigError, cli_logging, report
from engine.hub.client import HubError

ROOT = Path(__file__).resolve().parent.parent
FILES = ("app.py", "requirements.txt")
FOLDERS = ("ui", "engine", "accelerate_configs")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".tmp")


def gradio_version(requirements: str) -> str:
    """The gradio version the requirements pin (`==X`) or start from (`>=X`), as major.minor.patch."""
    m = re.search(r"^\s*gradio\s*(?:\[[^\]]*\])?\s*(==|>=|~=)\s*([0-9][0-9.]*)", requirements, re.MULTILINE)
    if not m:
        raise HubError("requirements.txt: no `gradio==X` or `gradio>=X` line; the Space needs a gradio version")
    parts = (m[2].rstrip(".").split(".") + ["0", "0"])[:3]
    return ".".join(parts)


def space_readme(root: Path = ROOT) -> bytes:
    """space/README.md with `sdk_version` taken from requirements.txt."""
    text = (root / "space" / "README.md").read_text(encoding="utf-8")
    version = gradio_version((root / "requirements.txt").read_text(encoding="utf-8"))
    text, n = re.subn(r"^sdk_version:.*$", f"sdk_version: {version}", text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise HubError("space/README.md: its YAML header has no sdk_version line")
    return text.encode("utf-8")


def collect(root: Path = ROOT) -> dict:
    """{path in the Space: local Path or bytes} for every file the Space needs."""
    root = Path(root)
    if not (root / "app.py").is_file():
        raise HubError(f"app.py: not found in {root}; the Space runs app.py, so build the app before publishing")
    for name in ("requirements.txt", "space/README.md"):
        if not (root / name).is_file():
            raise HubError(f"{name}: not found in {root}; the Space cannot be built without it")
    files: dict = {name: root / name for name in FILES}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")) if (root / folder).is_dir() else []:
            rel = path.relative_to(root)
            if path.is_file() and not (set(rel.parts) & SKIP_DIRS) and not path.name.startswith(".") \
                    and not path.name.endswith(SKIP_SUFFIXES):
                files[rel.as_posix()] = path
    files["README.md"] = space_readme(root)
    return files


def publish(space_id: str, private: bool = False, token=None, root: Path = ROOT) -> str:
    """Upload the app to the Space `space_id` (created as a Gradio Space if missing); returns its URL."""
    from engine.hub.client import check_push_id
    from engine.hub.push import publish_space

    check_push_id(space_id, "space")  # a bad name is reported before anything is read or sent
    return publish_space(space_id, collect(root), token=token, private=private)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prints the Space URL, or one `hubtune: error: ...` line and exits 2."""
    p = CliParser(prog="python -m space.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="user/name or org/name of the Space")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    cli_logging()
    try:
        args = p.parse_args(argv)
        print(publish(args.space, private=args.private))
    except ConfigError as e:
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
