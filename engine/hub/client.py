"""The Hub client hubtune builds on: tokens that never show themselves, the endpoint, bounded retries, clear
errors, and downloads (safetensors only). engine/modeling.py downloads models through it; engine/hub/push.py pushes.

HF_ENDPOINT and HF_HUB_OFFLINE are read at every call (huggingface_hub itself reads them only once, at import).
Tokens come from the caller (a signed-in Space user's OAuth token), else HF_TOKEN, else the stored login; they are
wrapped in `Token` so that no repr, log line, event, card or argv ever shows one. Transient failures (5xx, 429,
timeouts, refused connections) are retried a bounded number of times with exponential backoff; everything else
becomes a `HubError` with one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from engine.errors import ConfigError

log = logging.getLogger("hubtune")

# Weights are pulled as safetensors only: pickle files (*.bin, *.pt, *.pth, *.pkl, *.ckpt) are never downloaded.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.md", "tokenizer*", "*.tiktoken", "*.yaml"]
DEFAULT_ENDPOINT = "https://huggingface.co"


class HubError(ConfigError):
    """A Hub problem explained in one line."""


class Token:
    """A Hub token that never shows itself: repr/str are masked, pickling is refused. Use `reveal()` to send it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "argument"):
        self._value, self.source = value, source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Token(***, source={self.source})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Token is a secret and is never pickled or copied to another process")


def resolve_token(token=None, use_stored_token: bool = True) -> Token | None:
    """Explicit token (str, Token, or gr.OAuthToken) > HF_TOKEN > the stored `hf auth login` token.

    On a Space, pass the signed-in user's OAuth token with `use_stored_token=False`: the Space's own HF_TOKEN
    must never push on behalf of a visitor.
    """
    if isinstance(token, Token):
        return token
    value = getattr(token, "token", token)  # gr.OAuthToken carries the user's token in .token
    if isinstance(value, str) and value.strip():
        return Token(value.strip(), "oauth" if value is not token else "argument")
    if not use_stored_token:
        return None
    if os.environ.get("HF_TOKEN", "").strip():
        return Token(os.environ["HF_TOKEN"].strip(), "HF_TOKEN")
    from huggingface_hub import get_token

    stored = get_token()
    return Token(stored, "login") if stored else None


def endpoint() -> str:
    """The Hub URL in use: HF_ENDPOINT when set, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE",
                                                                                     "TRANSFORMERS_OFFLINE"))


def _sync_env() -> str:
    """Make huggingface_hub follow the current HF_ENDPOINT / HF_HUB_OFFLINE, even if it was imported earlier."""
    from huggingface_hub import constants

    ep = endpoint()
    if constants.ENDPOINT != ep:
        constants.ENDPOINT = ep
        # hf_hub_url() builds download URLs from this template, frozen at import time
        constants.HUGGINGFACE_CO_URL_TEMPLATE = ep + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_HUB_OFFLINE = _offline()
    return ep


_NAMES: dict[tuple[str, str], str | None] = {}


def account_name(token=None, use_stored_token: bool = True) -> str | None:
    """The Hub user name behind the token, only to prefill forms: None when offline, without a token, or on any error.

    One attempt, no retries, cached per (endpoint, token digest) in memory, so a form that asks again costs nothing.
    """
    import hashlib

    if _offline():
        return None
    tok = resolve_token(token, use_stored_token)
    if tok is None:
        return None
    ep = _sync_env()
    key = (ep, hashlib.sha256(tok.reveal().encode()).hexdigest())
    if key not in _NAMES:
        try:
            _NAMES[key] = _api(tok, ep).whoami().get("name")
        except Exception as e:  # noqa: BLE001 - a suggestion only; pushing reports the real error
            log.debug("whoami for a suggestion failed: %s", _brief(e, tok))
            _NAMES[key] = None
    return _NAMES[key]


def check_repo_id(repo_id: str, field: str = "model_name_or_path") -> None:
    """Raise HubError unless `repo_id` is a valid Hub id (`name` or `namespace/name`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"{field}: '{repo_id}' is neither a local directory nor a valid Hub id "
                       "(user/name or name); check the spelling or the path") from None


def check_push_id(repo_id: str, field: str = "repo") -> str:
    """Return the stripped repo id, or raise HubError: pushes need a valid `name` or `namespace/name`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = (repo_id or "").strip()
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") > 1 or repo_id.endswith((".git", "/")):
            raise HFValidationError(repo_id)
    except HFValidationError:
        raise HubError(f"{field}: '{repo_id}' is not a valid repo name; use user/name or org/name with letters, "
                       "digits, '-', '_' and '.' (at most 96 characters)") from None
    return repo_id


# ------------------------------------------------------------------------------------------------------------
# retries and errors


def _retries() -> tuple[int, float]:
    """(attempts, first backoff in seconds); HUBTUNE_HUB_RETRIES / HUBTUNE_HUB_BACKOFF make tests fast."""
    return max(1, int(os.environ.get("HUBTUNE_HUB_RETRIES", "4"))), float(os.environ.get("HUBTUNE_HUB_BACKOFF", "1"))


def _status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


def _transient(e: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        return False
    if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None:
        return _transient(e.__cause__)  # snapshot_download hides a 5xx/timeout behind "not in the cache"
    if isinstance(e, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, TimeoutError,
                      ConnectionError)):
        return True
    status = _status(e)
    return status is not None and (status >= 500 or status in (408, 429))


def _call(fn, what: str, *, repo_id: str, revision: str | None = None, token: Token | None = None):
    """Run `fn()` with bounded retries on transient failures; any failure becomes one clear HubError."""
    attempts, wait = _retries()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except HubError:
            raise
        except Exception as e:  # noqa: BLE001 - every Hub failure is turned into one line below
            if attempt < attempts and _transient(e):
                log.warning("%s: transient Hub error (%s); retry %d/%d in %.1fs", what, _brief(e, token), attempt,
                            attempts - 1, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)
                continue
            raise _explain(e, what, repo_id, revision, token, attempt) from None


def _brief(e: BaseException, token: Token | None) -> str:
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    return _scrub(text, token)


def _scrub(text: str, token: Token | None) -> str:
    return text.replace(token.reveal(), "***") if token is not None and token.reveal() else text


def _explain(e: BaseException, what: str, repo_id: str, revision: str | None, token: Token | None,
             attempts: int) -> HubError:
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    ep, status = endpoint(), _status(e)
    tokens = f"{ep}/settings/tokens"
    if isinstance(e, OfflineModeIsEnabled) or (isinstance(e, LocalEntryNotFoundError) and _offline()):
        msg = f"cannot {what} '{repo_id}': HF_HUB_OFFLINE is set; unset it to reach the Hub"
        if what == "download":
            msg += " (the repo is not in the local cache), or use a local model directory"
    elif isinstance(e, RevisionNotFoundError):
        msg = f"revision '{revision}' not found in '{repo_id}'; use a branch, tag or commit that exists"
    elif isinstance(e, GatedRepoError):
        msg = f"'{repo_id}' is gated; accept its terms on the Hub and use a token that has access"
    elif isinstance(e, RepositoryNotFoundError) or (status == 404 and not isinstance(e, RemoteEntryNotFoundError)):
        msg = (f"repo '{repo_id}' not found (or it is private and the token cannot read it); check the name, "
               "or sign in / set HF_TOKEN with a token that can read it")
    elif isinstance(e, RemoteEntryNotFoundError):
        msg = f"a file is missing in '{repo_id}' at revision '{revision or 'main'}'; check the repo's files"
    elif status == 401:
        msg = (f"the Hub rejected the token ({token.source if token else 'none'}) as invalid or expired; create a "
               f"new one at {tokens}, then set HF_TOKEN, run `hf auth login`, or sign in again")
    elif status == 403:
        msg = (f"not allowed to {what} '{repo_id}': it belongs to another user or organisation, or the token is "
               f"read-only; use your own namespace or a token with write access ({tokens})")
    elif status == 409:
        msg = (f"conflict on '{repo_id}': the name is taken or the repo changed during the push; push again, or "
               "choose another name")
    elif status == 400 or isinstance(e, ValueError):
        msg = f"the Hub refused to {what} '{repo_id}' ({_brief(e, token)}); fix the request and retry"
    elif _transient(e):
        cause = f"HTTP {status}" if status else type(e.__cause__ or e).__name__
        msg = (f"could not {what} '{repo_id}': the Hub at {ep} failed {attempts} time(s) ({cause}); check the "
               "network or HF_ENDPOINT and try again later")
    elif isinstance(e, LocalEntryNotFoundError):
        msg = (f"'{repo_id}' is not in the local cache and the Hub at {ep} cannot be reached; check the network "
               "or HF_ENDPOINT")
    else:
        msg = f"could not {what} '{repo_id}': {_brief(e, token)}"
    return HubError(_scrub(msg, token))


# ------------------------------------------------------------------------------------------------------------
# pull


def pull(repo_id: str, revision: str | None = None, cache_dir=None, token=None, field: str = "repo",
         patterns: list[str] | None = None) -> Path:
    """Download a model repo (safetensors, configs, tokenizer, card; never pickle weights); returns its folder.
    `patterns`: download only these files instead (the ONNX backend fetches onnx/ this way, into the same folder)."""
    from huggingface_hub import snapshot_download

    check_repo_id(repo_id, field)
    ep = _sync_env()
    tok = resolve_token(token)
    path = _call(lambda: snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, endpoint=ep,
                                           allow_patterns=patterns or MODEL_PATTERNS,
                                           token=tok.reveal() if tok else None),
                 "download", repo_id=repo_id, revision=revision, token=tok)
    return Path(path)


def model_config(repo_id: str, revision: str | None = None) -> dict:
    """A Hub model's config.json alone (a few kB, cached like any Hub file): what the UI needs to pick the input
    widgets for a typed Hub id before the weights are downloaded on the first prediction."""
    import json

    from huggingface_hub import hf_hub_download

    check_repo_id(repo_id, "model")
    ep = _sync_env()
    tok = resolve_token(None)
    path = _call(lambda: hf_hub_download(repo_id, "config.json", revision=revision, endpoint=ep,
                                         token=tok.reveal() if tok else None),
                 "read the config of", repo_id=repo_id, revision=revision, token=tok)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HubError(f"'{repo_id}' has an unreadable config.json ({type(e).__name__})") from None


def download_model(repo_id: str, revision: str | None = None, field: str = "model_name_or_path") -> Path:
    """Snapshot a model repo for training or prediction (used by engine.modeling.resolve_model)."""
    check_repo_id(repo_id, field)
    try:
        return pull(repo_id, revision, field=field)
    except HubError as e:
        raise HubError(f"{field}: {e.problems[0]}") from None


def _api(tok: Token | None, ep: str):
    from huggingface_hub import HfApi

    # a fresh client per call, holding this caller's token only: sessions never share credentials
    return HfApi(endpoint=ep, token=tok.reveal() if tok else False)
