"""Every huggingface_hub network call lives here: pull models (and, later, push runs).

The endpoint comes from HF_ENDPOINT and offline mode from HF_HUB_OFFLINE, both read by huggingface_hub itself.
Errors become `HubError` with one line that says what to do.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError

# Weights are pulled as safetensors only: pickle files (*.bin, *.pt, *.pth, *.pkl, *.ckpt) are never downloaded.
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.md", "tokenizer*", "*.tiktoken", "*.yaml"]


class HubError(ConfigError):
    """A Hub problem explained in one line."""


def check_repo_id(repo_id: str, field: str = "model_name_or_path") -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"{field}: '{repo_id}' is neither a local directory nor a valid Hub id "
                       "(user/name or name); check the spelling or the path") from None


def download_model(repo_id: str, revision: str | None = None, field: str = "model_name_or_path") -> Path:
    """Snapshot a model repo (safetensors, configs, tokenizer) into the local cache and return its folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    check_repo_id(repo_id, field)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_PATTERNS))
    except GatedRepoError:
        raise HubError(f"{field}: '{repo_id}' is gated; accept its terms on the Hub and log in with a token") from None
    except RepositoryNotFoundError:
        raise HubError(f"{field}: model '{repo_id}' not found on the Hub (or it is private); check the id or log "
                       "in with a token that can read it") from None
    except RevisionNotFoundError:
        raise HubError(f"{field}: revision '{revision}' not found in '{repo_id}'; use a branch, tag or commit "
                       "that exists") from None
    except LocalEntryNotFoundError:
        raise HubError(f"{field}: '{repo_id}' is not a local directory and not in the cache, and the Hub cannot "
                       "be reached (offline); use a local model directory or the default base model") from None
    except OSError as e:  # connection errors after retries
        raise HubError(f"{field}: could not download '{repo_id}' ({type(e).__name__}); check the network or "
                       "HF_ENDPOINT") from None
