"""Push runs, pull models, publish the Space: the Hub commands, on top of engine/hub/client.py.

    python -m engine.hub push runs/x --repo user/name [--private] [--revision branch] [--with-onnx]
    python -m engine.hub pull user/name [--revision sha] [--cache-dir dir]
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from engine.errors import CliParser, ConfigError, cli_logging, report
from engine.hub.client import HubError, Token, _api, _call, _sync_env, check_push_id, endpoint, pull, resolve_token

log = logging.getLogger("hubtune")

# ------------------------------------------------------------------------------------------------------------
# push


def build_model_card(run_dir, repo_id: str | None = None, license: str | None = None, onnx: dict | None = None):
    """The run's model card (huggingface_hub.ModelCard): metadata with model-index, hyperparameters, curves."""
    from engine.hub.card import build_model_card as build

    return build(run_dir, repo_id=repo_id, license=license, onnx=onnx)


def _need_token(tok: Token | None, what: str) -> Token:
    if tok is None:
        raise HubError(f"no Hugging Face token to {what}: sign in with Hugging Face, set HF_TOKEN, or run "
                       f"`hf auth login` (create a token with write access at {endpoint()}/settings/tokens)")
    return tok


def _commit(repo_id: str, repo_type: str, files, tok: Token, private: bool, revision: str | None,
            message: str, what: str, space_sdk: str | None = None) -> str:
    """Create the repo if needed (and the branch), then upload `files` {path_in_repo: Path | bytes} in one commit.

    `files` may be a callable returning that dict: slow work (plots, card) then waits until the token and the repo
    are known to be fine."""
    from huggingface_hub import CommitOperationAdd

    ep = _sync_env()
    api = _api(tok, ep)
    ctx = {"repo_id": repo_id, "revision": revision, "token": tok}
    who = _call(lambda: api.whoami(), "check the token for", **ctx)
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"the token of '{who.get('name')}' is read-only and cannot {what} '{repo_id}'; create a "
                       f"token with write access at {ep}/settings/tokens and sign in / set HF_TOKEN with it")
    if "/" not in repo_id:
        repo_id = ctx["repo_id"] = f"{who['name']}/{repo_id}"
    url = _call(lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                                        space_sdk=space_sdk), what, **ctx)
    if revision and revision != "main":
        _call(lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True), what, **ctx)

    def commit():
        # operations are single-use in huggingface_hub, so a retry builds them again
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(src) if isinstance(src, Path) else src)
               for p, src in sorted(files.items())]
        return api.create_commit(repo_id, ops, commit_message=message, repo_type=repo_type, revision=revision)

    if callable(files):
        files = files(repo_id)
    info = _call(commit, what, **ctx)
    log.info("pushed %d files to %s (commit %s)", len(files), url, info.oid[:10])
    base = str(url).rstrip("/")
    return f"{base}/tree/{revision}" if revision and revision != "main" else base


def push_run(run_dir, repo_id: str, token=None, private: bool = False, revision: str | None = None,
             license: str | None = None, use_stored_token: bool = True, with_onnx: bool = False) -> str:
    """Push a finished run (model/, card, config.yaml, metrics.json, plots) in one commit; returns the repo URL.

    `with_onnx`: the model's ONNX export (model/onnx/, python -m engine.export) goes in the same commit and the card
    says how to run it; without it, model/onnx/ stays local. Nothing in the run directory is changed, so a failed
    push can simply be repeated.
    """
    from engine.hub.card import card_plots
    from engine.rundir import RunDir
    from engine.serving import onnx_backend

    repo_id = check_push_id(repo_id, "repo")
    if revision is not None and not revision.strip():
        revision = None
    run = RunDir(run_dir)
    if not run.is_finished():
        raise HubError(f"run: '{run.path}' is not a finished run (no status done and model/); wait for training "
                       "to finish or pick another run")
    record = None
    if with_onnx:  # refused before any request: a missing or stale export is one line saying what to run
        onnx_backend.find_export(run.model, onnx_backend.FP32_FILE, str(run.path), otherwise="or push without "
                                 "--with-onnx")
        record = onnx_backend.read_record(run.model / onnx_backend.ONNX_DIR)
    tok = _need_token(resolve_token(token, use_stored_token), "push")
    with tempfile.TemporaryDirectory(prefix="hubtune-push-") as tmp:

        def files(full_id: str) -> dict:
            out: dict = {p.relative_to(run.model).as_posix(): p for p in sorted(run.model.rglob("*")) if p.is_file()}
            if not with_onnx:
                out = {k: v for k, v in out.items() if not k.startswith(onnx_backend.ONNX_DIR + "/")}
            out["config.yaml"] = run.config
            out["metrics.json"] = run.metrics
            # the pictures the card links, those only: a confusion matrix for single-label runs, the
            # predicted-vs-true scatter plot for regression, the loss curve for all
            for name, draw in card_plots(run.path).items():
                out[name] = draw(run.path, tmp)
            out["README.md"] = str(build_model_card(run.path, repo_id=full_id, license=license, onnx=record)
                                   ).encode("utf-8")
            return out

        return _commit(repo_id, "model", files, tok, private, revision,
                       f"hubtune: upload run {run.path.name}", "push to")


def push_checkpoint(run_dir, model_dir, repo_id: str, step: int, token=None, private: bool = False) -> str:
    """Push an intermediate model (a save_pretrained folder) and the run's config.yaml as one commit."""
    from engine.rundir import RunDir

    repo_id = check_push_id(repo_id, "hub_model_id")
    tok = _need_token(resolve_token(token), "push")
    model_dir = Path(model_dir)
    files: dict = {p.relative_to(model_dir).as_posix(): p for p in sorted(model_dir.rglob("*")) if p.is_file()}
    files["config.yaml"] = RunDir(run_dir).config
    return _commit(repo_id, "model", files, tok, private, None, f"hubtune: checkpoint at step {step}", "push to")


def publish_space(space_id: str, files: dict, token=None, private: bool = False,
                  use_stored_token: bool = True) -> str:
    """Upload an app (files {path_in_repo: Path | bytes}, README.md included) to a Gradio Space in one commit."""
    space_id = check_push_id(space_id, "space")
    tok = _need_token(resolve_token(token, use_stored_token), "publish the Space")
    return _commit(space_id, "space", files, tok, private, None, "hubtune: publish the app", "publish to",
                   space_sdk="gradio")


# ------------------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.hub push|pull ...`; one `hubtune: error: ...` line and exit 2 on any problem."""
    p = CliParser(prog="python -m engine.hub", description="Push runs to and pull models from the Hugging Face Hub. "
               "The token comes from HF_TOKEN or `hf auth login`, never from the command line.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=CliParser)
    push = sub.add_parser("push", help="upload a finished run directory as a model repo")
    push.add_argument("run_dir")
    push.add_argument("--repo", required=True, help="user/name or org/name")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    push.add_argument("--license", default=None, help="license id for the card (default: the base model's)")
    push.add_argument("--with-onnx", action="store_true", help="add the model's ONNX export (model/onnx/, from "
                      "python -m engine.export) to the same commit, and an onnxruntime snippet to the card")
    pull_p = sub.add_parser("pull", help="download a model repo (safetensors only) into the cache")
    pull_p.add_argument("repo")
    pull_p.add_argument("--revision", default=None, help="branch, tag or commit")
    pull_p.add_argument("--cache-dir", default=None)
    cli_logging()
    try:
        args = p.parse_args(argv)
        if args.cmd == "push":
            print(push_run(args.run_dir, args.repo, private=args.private, revision=args.revision,
                           license=args.license, with_onnx=args.with_onnx))
        else:
            print(pull(args.repo, args.revision, cache_dir=args.cache_dir))
    except ConfigError as e:
        return report(e)
    return 0
