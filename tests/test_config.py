"""TrainConfig parsing and validation; every shipped YAML (run examples and accelerate configs) loads."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from engine.config import ConfigError, TrainConfig, parse_args

ROOT = Path(__file__).resolve().parent.parent


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("dataset_name: bundled:bbc_news\nlearning_rate: 3e-5\nnum_train_epochs: 4\n")
    cfg = parse_args(["--config", str(cfg_file), "--num_train_epochs", "2", "--group_by_length", "false"])
    assert cfg.learning_rate == 3e-5          # YAML over default (and '3e-5' is a float, not a string)
    assert cfg.num_train_epochs == 2.0        # CLI over YAML
    assert cfg.group_by_length is False
    assert cfg.per_device_train_batch_size == 32  # default


def test_unknown_keys_are_errors_with_suggestions(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("dataset_name: bundled:bbc_news\nlearning_rte: 1e-4\nfoo: 1\n")
    with pytest.raises(ConfigError) as e:
        parse_args(["--config", str(cfg_file)])
    assert len(e.value.problems) == 2
    assert "learning_rte" in e.value.problems[0] and "learning_rate" in e.value.problems[0]
    with pytest.raises(ConfigError, match="unknown option '--num_epochs'.*num_train_epochs"):
        parse_args(["--num_epochs", "3"])


def test_bad_value_type_is_one_line():
    with pytest.raises(ConfigError) as e:
        parse_args(["--per_device_train_batch_size", "many"])
    assert "per_device_train_batch_size" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="mixed_precision"):
        parse_args(["--mixed_precision", "fp8"])


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in out, f.name
    assert "Peak learning rate of AdamW" in out


def test_validate_reports_every_problem_at_once(tmp_path):
    cfg = TrainConfig(dataset_name=None, train_file=str(tmp_path / "missing.csv"), learning_rate=-1.0,
                      per_device_train_batch_size=0, num_train_epochs=0, validation_file="data.xlsx",
                      mixed_precision="fp16", warmup_steps=5, warmup_ratio=0.1, output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    text = "\n".join(e.value.problems)
    for field in ("train_file", "learning_rate", "per_device_train_batch_size", "num_train_epochs",
                  "validation_file", "mixed_precision", "warmup_steps/warmup_ratio"):
        assert field in text, field
    assert "not found" in text and "unsupported extension '.xlsx'" in text and "fp16 needs a CUDA GPU" in text


def test_no_data_source_and_unknown_bundle(tmp_path):
    with pytest.raises(ConfigError, match="no training data"):
        TrainConfig(output_dir=str(tmp_path / "o")).validate()
    with pytest.raises(ConfigError, match="unknown bundled dataset 'bundled:nope'"):
        TrainConfig(dataset_name="bundled:nope", output_dir=str(tmp_path / "o")).validate()


def test_existing_output_dir_needs_overwrite_or_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    cfg = TrainConfig(dataset_name="bundled:bbc_news", output_dir=str(out))
    with pytest.raises(ConfigError, match="already holds a run"):
        cfg.validate()
    dataclasses.replace(cfg, overwrite_output_dir=True).validate()
    dataclasses.replace(cfg, resume_from_checkpoint="latest").validate()
    with pytest.raises(ConfigError, match="resume_from_checkpoint"):
        dataclasses.replace(cfg, resume_from_checkpoint=str(tmp_path / "nope")).validate()


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_args(["--dataset_name", "bundled:bbc_news", "--learning_rate", "3e-5", "--extra_metrics", "a", "b",
                      "--max_train_samples", "10"])
    cfg.save(tmp_path / "config.yaml")
    again = TrainConfig.load(tmp_path / "config.yaml")
    assert again == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path, tmp_path):
    cfg = parse_args(["--config", str(path), "--output_dir", str(tmp_path / "o")])
    cfg.validate()


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    raw = yaml.safe_load(path.read_text())
    loaded = load_config_from_file(str(path))
    assert str(loaded.distributed_type).split(".")[-1] == raw["distributed_type"]
    assert loaded.num_processes == raw["num_processes"]
    if path.name.startswith("cpu"):
        assert loaded.use_cpu is True


def test_expected_accelerate_configs_ship():
    names = {p.name for p in (ROOT / "accelerate_configs").glob("*.yaml")}
    assert {"cpu.yaml", "cpu_ddp.yaml", "single_gpu.yaml", "multi_gpu.yaml", "fsdp.yaml", "deepspeed_zero2.yaml",
            "multi_node.yaml"} <= names
