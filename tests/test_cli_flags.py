"""Every command takes its options by their whole names only: an abbreviation (argparse's prefix matching) or a
misspelling is one `hubtune: error:` line naming the flag, with the whole name it was probably meant as, and exit
code 2, before anything starts. Each command line below would otherwise fail fast for another reason (a missing
folder, nothing to resume), so a regression shows as a wrong message, never as a run that starts."""

import importlib
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# (command, its main(argv), argv with {tmp}, the flag as typed, the whole name suggested)
CASES = [
    ("engine.train", "engine.training.run",
     ["--config", "examples/bbc_news.yaml", "--learning_rat", "3e-5", "--model_name_or_path", "{tmp}/no-model",
      "--output_dir", "{tmp}/out"], "--learning_rat", "--learning_rate"),
    ("engine.predict", "engine.serving.predictor", ["--model", "{tmp}/no-model", "--text", "hi", "--top", "2"],
     "--top", "--top_k"),
    ("engine.predict-misspelt", "engine.serving.predictor", ["--model", "{tmp}/no-model", "--txt", "hi"],
     "--txt", "--text"),
    ("engine.search", "engine.search.study",
     ["--config", "examples/bbc_news_search.yaml", "--output_dir", "{tmp}/search", "--resum"], "--resum", "--resume"),
    ("engine.search-run-flag", "engine.search.study",
     ["--config", "examples/bbc_news_search.yaml", "--output_dir", "{tmp}/search", "--resume", "--learning_rat",
      "1e-4"], "--learning_rat", "--learning_rate"),
    ("engine.hub", "engine.hub.push", ["push", "{tmp}/no-run", "--rep", "user/x"], "--rep", "--repo"),
    ("engine.export", "engine.serving.export", ["--model", "{tmp}/no-model", "--quant", "int8"], "--quant",
     "--quantize"),
    ("engine.runs", "engine.runs.listing", ["{tmp}", "--fin"], "--fin", "--finished"),
    ("engine.leaderboard", "engine.runs.leaderboard", ["{tmp}", "--cs", "{tmp}/board.csv"], "--cs", "--csv"),
    ("engine.launch", "engine.training.launch",
     ["--cpu", "--num_proc", "2", "-m", "engine.train", "--train_file", "{tmp}/no.csv"], "--num_proc",
     "--num_processes"),
    ("engine.launch-run-flag", "engine.training.launch",
     ["--cpu", "-m", "engine.train", "--learning_rat", "3e-5", "--train_file", "{tmp}/no.csv", "--output_dir",
      "{tmp}/out"], "--learning_rat", "--learning_rate"),
]


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hubtune: error:")]


@pytest.mark.parametrize("command, module, argv, flag, meant", CASES, ids=[c[0] for c in CASES])
def test_only_whole_option_names_are_accepted(command, module, argv, flag, meant, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main = importlib.import_module(module).main
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert _errors(err) == [f"hubtune: error: command line: unknown option '{flag}' (did you mean '{meant}'?)"], err
    assert "usage:" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may start for a bad flag"


def test_whole_names_values_and_script_arguments_still_parse(tmp_path, capsys):
    """The scan that names unknown flags tells values from flags (negative numbers, a text starting with '-' and a
    space, repeated flags), stops at a subcommand's or a launched script's own arguments, and accepts both spellings
    accelerate and the training flags take (--num_processes, --num-processes)."""
    from engine.config import parse_args
    from engine.errors import CliParser, unknown_options
    from engine.serving.predictor import _parser as predict_parser
    from engine.training.launch import main as launch

    args = predict_parser().parse_args(["--model", "m", "--text", "-5", "--text", "- a dash", "--top_k", "2",
                                        "--json", "--precision=fp32"])
    assert args.text == ["-5", "- a dash"] and args.top_k == 2 and args.precision == "fp32"
    cfg = parse_args(["--learning_rate", "-0.001", "--extra_metrics", "a", "b", "--group-by-length", "false",
                      "--push_to_hub", "--seed", "3"])
    assert (cfg.learning_rate, cfg.extra_metrics, cfg.group_by_length, cfg.push_to_hub, cfg.seed) == (
        -0.001, ["a", "b"], False, True, 3)
    hub = CliParser(prog="x")
    push = hub.add_subparsers(dest="cmd", parser_class=CliParser).add_parser("push")
    push.add_argument("run")
    push.add_argument("--with-onnx", action="store_true")
    assert unknown_options(["push", "runs/x", "--with-onnx", "--repo", "u/x"], hub) == ["--repo"]
    # a missing data file: refused by the launch check itself, before any process starts
    rc = launch(["--cpu", "--num-processes", "1", "-q", "-m", "engine.train", "--learning_rate", "1e-4",
                 "--train_file", str(tmp_path / "nope.csv"), "--output_dir", str(tmp_path / "out")])
    errors = _errors(capsys.readouterr().err)
    assert rc == 2 and len(errors) == 1 and "nope.csv" in errors[0] and "unknown option" not in errors[0], errors


def test_the_shell_gets_one_line_and_exit_code_2(tmp_path):
    """As the issue ran it (python -m engine.train --config examples/bbc_news.yaml --learning_rat 3e-5), in a real
    process: one line on stderr, exit code 2, no run folder."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "engine.train", "--config", "examples/bbc_news.yaml",
                           "--learning_rat", "3e-5", "--output_dir", str(out),
                           "--model_name_or_path", str(tmp_path / "no-model")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hubtune: error: command line: unknown option '--learning_rat' (did you mean '--learning_rate'?)"], proc.stderr
    assert not out.exists()
