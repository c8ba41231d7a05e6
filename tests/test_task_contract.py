"""Every registered task goes through the same cycle on real data: train a few steps -> save -> reload the saved
model -> predict, and the reloaded model's prediction of a validation example is the one the run itself recorded
in eval_predictions.jsonl. A task added to the registry without an entry here fails the first test."""

import json

import pytest

from engine import tasks

# pipeline tag -> (a tiny real run's arguments, how to give the reloaded model one validation example)
RUNS = {
    "text-classification": ["--dataset_name", "bundled:bbc_news", "--max_train_samples", "160",
                            "--max_eval_samples", "40", "--max_seq_length", "32", "--max_steps", "4",
                            "--per_device_train_batch_size", "16", "--learning_rate", "2e-4"],
    "image-classification": ["--dataset_name", "bundled:digits", "--model_name_or_path", "mlp", "--max_steps", "4",
                             "--learning_rate", "2e-3"],
}
# fp32 evaluation, so the recorded scores are the ones fp32 prediction gives back
COMMON = ["--eval_strategy", "steps", "--eval_steps", "4", "--save_steps", "4", "--seed", "3", "--mixed_precision", "no"]


def test_every_registered_task_has_a_contract_run():
    assert set(RUNS) == set(tasks.REGISTRY)


@pytest.mark.parametrize("tag", sorted(RUNS))
def test_train_save_reload_predict(tag, tmp_path):
    from engine.serving.predictor import Predictor
    from engine.training.run import main

    out = tmp_path / "run"
    assert main([*RUNS[tag], *COMMON, "--output_dir", str(out)]) == 0
    assert tasks.for_model(out / "model").tag == tag
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert rows and all({"text", "label", "prediction", "score"} <= set(r) for r in rows)

    predictor = Predictor(precision="fp32")
    lm = predictor.load(str(out))
    assert lm.task == tag and lm.labels == json.loads((out / "metrics.json").read_text())["validation"]["labels"]
    if lm.kind.input_kind == "text":
        row = rows[0]
        # eval_predictions keeps the first 2,000 characters; the run saw at most 32 tokens of them
        got = predictor.predict(str(out), [row["text"]], max_length=32)[0]
    else:
        sample = json.loads((out / "samples" / "index.jsonl").read_text().splitlines()[0])
        row = {"prediction": sample["prediction"], "score": sample["score"]}
        got = predictor.predict_image(str(out), str(out / "samples" / sample["path"]))
    top = next(iter(got))
    assert top == row["prediction"] and abs(got[top] - row["score"]) < 2e-2, (got, row)
