"""ui/forms.py: the form is generated from TrainConfig and round-trips through the trainer's own parsing."""

import dataclasses
import subprocess
import sys

import gradio as gr

from conftest import ROOT
from engine.config import TrainConfig
from ui import forms


def test_every_field_gets_a_fitting_widget_with_its_help():
    with gr.Blocks():
        comps = forms.build_form()
    assert list(comps) == [f.name for f in dataclasses.fields(TrainConfig)] or set(comps) == set(
        TrainConfig.field_names())
    assert isinstance(comps["group_by_length"], gr.Checkbox)
    assert isinstance(comps["lr_scheduler_type"], gr.Dropdown) and "cosine" in [c[0] for c in
                                                                               comps["lr_scheduler_type"].choices]
    assert isinstance(comps["validation_split_percentage"], gr.Slider)
    assert comps["validation_split_percentage"].minimum == 1 and comps["validation_split_percentage"].maximum == 50
    lr = comps["learning_rate"]
    assert isinstance(lr, gr.Number) and lr.value == 5e-5 and "Range 1e-08 to 1." in lr.info
    assert comps["per_device_train_batch_size"].precision == 0
    # an optional number must be able to stay empty (gr.Number would turn None into 0)
    assert isinstance(comps["max_train_samples"], gr.Textbox) and comps["max_train_samples"].value == ""
    help_text = TrainConfig.__dataclass_fields__["max_seq_length"].metadata["help"]
    assert comps["max_seq_length"].info.startswith(help_text)
    assert comps["output_dir"].info == TrainConfig.__dataclass_fields__["output_dir"].metadata["help"]


def test_groups_come_from_field_metadata():
    with gr.Blocks() as demo:
        forms.build_form(exclude=("output_dir",))
    titles = [b.label for b in demo.blocks.values() if isinstance(b, gr.Accordion)]
    assert titles[:4] == ["Model", "Data", "Training", "Optimizer"]
    assert "Output" in titles and "Speed" in titles


def test_values_round_trip_through_the_trainer_parser():
    names = ["learning_rate", "per_device_train_batch_size", "extra_metrics", "max_train_samples",
             "group_by_length", "lr_scheduler_type", "dataset_name"]
    # what the widgets hand back: floats from Number, an empty optional, a comma list
    values = forms.form_values(names, [3e-4, 16.0, "accuracy, ./my_metric", " ", False, "cosine",
                                       "bundled:bbc_news"])
    assert values["per_device_train_batch_size"] == 16 and isinstance(values["per_device_train_batch_size"], int)
    cfg = forms.to_config(values)
    assert cfg.learning_rate == 3e-4 and cfg.extra_metrics == ["accuracy", "./my_metric"]
    assert forms.form_values(["extra_metrics"], [""]) == {"extra_metrics": []}
    assert cfg.max_train_samples is None and cfg.group_by_length is False and cfg.lr_scheduler_type == "cosine"


def test_problems_are_the_trainers_messages():
    probs = forms.problems({"dataset_name": "bundled:bbc_news", "learning_rate": -1.0, "warmup_steps": 5,
                            "warmup_ratio": 0.1, "output_dir": "/tmp/hubtune-forms-test-new"})
    assert any(p.startswith("learning_rate: must be >=") for p in probs)
    assert any(p.startswith("warmup_steps/warmup_ratio") for p in probs)
    assert forms.problems({"dataset_name": "bundled:bbc_news", "output_dir": "/tmp/hubtune-forms-test-new"}) == []
    # an emptied required number is named, not silently defaulted, in words for a form (there is no YAML line)
    assert forms.problems(forms.form_values(["learning_rate"], [""])) == [
        "learning_rate: cannot be empty; type a value (the default is 5e-05)"]
    assert any("per_device_train_batch_size" in p for p in forms.problems(
        forms.form_values(["per_device_train_batch_size"], [None])))


def test_importing_the_ui_does_not_import_torch():
    code = "import sys, ui.forms, ui.train_tab, engine.runs.jobs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                              "PYTHONPATH": str(ROOT), "HOME": "/root"})
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_from_scratch_models_get_their_own_learning_rate_unless_the_user_typed_one():
    from engine.config import TrainConfig
    from ui.base_models import FINETUNE_LR, SCRATCH_LR, learning_rate_for

    assert TrainConfig().learning_rate == FINETUNE_LR  # the form starts at the fine-tuning default
    assert learning_rate_for("mlp", FINETUNE_LR)["value"] == SCRATCH_LR
    assert learning_rate_for("vit-tiny", FINETUNE_LR)["value"] == SCRATCH_LR
    assert learning_rate_for("sentence-transformers/all-MiniLM-L6-v2", SCRATCH_LR)["value"] == FINETUNE_LR
    assert "value" not in learning_rate_for("mlp", 3e-4)  # typed by the user: kept
    assert "value" not in learning_rate_for("bert-base-uncased", 1e-5)
