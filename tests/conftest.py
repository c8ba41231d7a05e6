"""Shared test set-up: offline, no analytics, and one tiny real training run reused by every test that needs it."""

import os

# before anything imports huggingface_hub or gradio: never wait on the network, never phone home
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A real fine-tune of the offline MiniLM on real BBC News articles, small enough for CI (~30 s on 2 cores).
TINY_ARGS = [
    "--dataset_name", "bundled:bbc_news", "--max_train_samples", "480", "--max_eval_samples", "120",
    "--max_seq_length", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
    "--max_steps", "30", "--learning_rate", "2e-4", "--warmup_steps", "3", "--logging_steps", "5",
    "--eval_strategy", "steps", "--eval_steps", "15", "--save_steps", "15", "--seed", "7",
]


def train_args(output_dir, *extra) -> list[str]:
    return [*TINY_ARGS, "--output_dir", str(output_dir), *map(str, extra)]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory (model/, metrics.json, events.jsonl ...) trained once per test session."""
    from engine.train import main

    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(train_args(out, "--report_to", "tensorboard")) == 0
    return out


# One Chromium for the whole session: a second sync Playwright in the same process cannot start while the first
# runs, so every browser test module takes this one (defined in _app_fixtures, registered once here).
from _app_fixtures import browser  # noqa: E402,F401
