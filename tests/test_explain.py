"""Explanations (engine/serving/explain.py, Captum's Integrated Gradients) on tiny real runs: a binary sentiment model
on VADER's movie snippets (clear positives and negatives by their mean human rating) explains a clear positive and a
clear negative review the right way round, its attributions adding up to the change of the logit difference; sub-tokens
merge into the text's words; truncation follows prediction; multi-label (MEDLINE MeSH headings) and regression (the
ratings themselves) explain per chosen label and toward higher values; an MNIST mlp gets a saliency overlay of the
image's shape; bad input is one line and exit code 2."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import pip_sets
from conftest import ROOT, whole_default_model
from engine.errors import PredictError
from engine.serving import explain
from engine.serving.predictor import Predictor, main as predict_main
from engine.training.run import main as train_main

# two held-out snippets, among the highest and lowest rated of the 10,605 (mean of 20 people: 3.94 and -3.5)
POSITIVE = "One of the greatest films I've ever seen."
NEGATIVE = "The worst film of the year."
# a real snippet (-3.875) whose rare words WordPiece cuts into several tokens each
SPLIT = "Bad. Very bad. Stultifyingly, dumbfoundingly, mind numbingly bad."
QUICK = ["--max_seq_length", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
         "--warmup_steps", "4", "--logging_steps", "10", "--eval_strategy", "steps", "--save_steps", "100",
         "--seed", "7", "--max_eval_samples", "100"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain_data")
    movies = pd.DataFrame(pip_sets.vader_movies())
    movies = movies[~movies.text.isin([POSITIVE, NEGATIVE, SPLIT])]  # the reviews explained stay unseen
    clear = movies[movies.rating.abs() >= 1.5].sample(1000, random_state=0)
    clear.assign(label=np.where(clear.rating > 0, "pos", "neg"))[["text", "label"]].to_csv(d / "sentiment.csv",
                                                                                           index=False)
    movies.sample(240, random_state=1).to_csv(d / "ratings.csv", index=False)
    with open(d / "mesh.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in pip_sets.medline_mesh(labels=4)[:240])
    return d


def _train(out, *args) -> str:
    assert train_main([*QUICK, "--output_dir", str(out), *map(str, args)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def sentiment_run(data_dir, tmp_path_factory):
    """The whole MiniLM fine-tuned for 40 steps on 900 clear reviews (validation accuracy about 0.84): the tests
    judge what its explanations mean, so it is trained on all 6 layers (conftest's whole_default_model)."""
    with whole_default_model():
        return _train(tmp_path_factory.mktemp("runs") / "sentiment", "--train_file", data_dir / "sentiment.csv",
                      "--max_steps", 40, "--learning_rate", 2e-4, "--eval_steps", 40)


@pytest.fixture(scope="module")
def predictor():
    return Predictor(precision="fp32")


def _baseline_logit_difference(lm, text: str) -> float:
    """pos - neg logit of the text with every word token replaced by [PAD] ([CLS] and [SEP] kept)."""
    import torch

    enc = lm.tokenizer(text, truncation=True, max_length=lm.max_length, return_special_tokens_mask=True)
    ids = [t if special else lm.tokenizer.pad_token_id for t, special in
           zip(enc["input_ids"], enc["special_tokens_mask"])]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
                          ).logits[0]
    pos, neg = lm.labels.index("pos"), lm.labels.index("neg")
    return float(logits[pos] - logits[neg])


def test_clear_reviews_point_the_right_way_and_add_up(sentiment_run, predictor):
    lm = predictor.load(sentiment_run)
    for text, want, strongest in ((POSITIVE, "pos", "greatest"), (NEGATIVE, "neg", "worst")):
        probs = predictor.predict_text(sentiment_run, text)
        assert next(iter(probs)) == want, probs
        difference = math.log(probs["pos"] / probs["neg"])  # the logit difference toward pos
        e = explain.explain(lm, text, "pos", 50)
        assert e.label == "pos" and e.steps == 50 and "log-odds" in e.meaning
        assert e.output == pytest.approx(difference, abs=1e-3)
        assert e.baseline_output == pytest.approx(_baseline_logit_difference(lm, text), abs=1e-4)
        assert np.sign(e.total) == np.sign(difference), (text, e.total, difference)
        gap = abs(e.total - (e.output - e.baseline_output))  # completeness: what the steps' integral misses
        assert gap < 0.01 and gap == pytest.approx(abs(e.delta), abs=1e-5), (gap, e.delta)
        assert e.total == pytest.approx(sum(s for _, s in e.words), abs=1e-5)  # nothing lost merging words
        # the sentiment word carries the review: most toward pos in the positive one, most against in the other
        ranked = sorted(e.words, key=lambda ws: ws[1])
        assert (ranked[-1] if want == "pos" else ranked[0])[0] == strongest, ranked

    # the default explains the predicted label; with two labels its log-odds are exactly pos's, negated
    toward_neg = explain.explain(lm, NEGATIVE)
    toward_pos = explain.explain(lm, NEGATIVE, "pos")
    assert toward_neg.label == "neg" and toward_neg.total > 0
    assert toward_neg.total == pytest.approx(-toward_pos.total, abs=1e-3)


def test_sub_tokens_merge_into_the_words_of_the_text(sentiment_run, predictor):
    from engine.tasks.text_classification.explain import merge_words

    lm = predictor.load(sentiment_run)
    enc = lm.tokenizer(SPLIT, return_offsets_mapping=True)
    assert len(enc["input_ids"]) > len(SPLIT.split()) + 4  # several words are cut into sub-tokens
    e = explain.explain(lm, SPLIT, None, 16)
    assert "".join(p for p, _ in e.pieces) == SPLIT
    assert [w for w, _ in e.words] == SPLIT.split()
    assert not e.truncated and e.tokens == len(enc["input_ids"])

    # each word gets the sum of its own tokens' scores: token i scores 2**i, so every sum is unique
    scores = [2.0 ** i for i in range(len(enc["input_ids"]))]
    expected = [0.0] * len(SPLIT.split())
    for (start, end), score in zip(enc["offset_mapping"], scores):
        if end > start:
            expected[SPLIT[:start].count(" ")] += score  # single spaces: the word index is the spaces before it
    merged = [s for _, s in merge_words(SPLIT, enc["offset_mapping"], scores) if s is not None]
    assert merged == expected


def test_long_texts_are_truncated_like_prediction(sentiment_run, predictor):
    lm = predictor.load(sentiment_run)
    long = " ".join([NEGATIVE, SPLIT, POSITIVE, SPLIT, NEGATIVE])
    e = explain.explain(lm, long, None, 8)
    assert e.truncated and e.tokens == lm.max_length == 32
    assert "".join(p for p, _ in e.pieces) == long
    assert e.pieces[-1][1] is None and e.pieces[-1][0].strip()  # the part cut off is shown, not scored
    assert len(e.words) < len(long.split())
    probs = predictor.predict_text(sentiment_run, long)  # the same 32 tokens
    top = next(iter(probs))
    assert e.label == top and e.output == pytest.approx(math.log(probs[top] / (1 - probs[top])), abs=1e-3)


def test_regression_explains_toward_higher_values(data_dir, tmp_path, predictor):
    run = _train(tmp_path / "ratings", "--train_file", data_dir / "ratings.csv", "--label_column", "rating",
                 "--max_steps", 6, "--learning_rate", 2e-4, "--eval_steps", 6)
    lm = predictor.load(run)
    e = explain.explain(lm, POSITIVE, None, 32)
    assert e.label == "rating" and e.meaning.startswith("toward higher rating")
    assert e.output == pytest.approx(predictor.predict_text(run, POSITIVE)["rating"], abs=1e-4)
    assert abs(e.total - (e.output - e.baseline_output)) < 0.01 * max(1.0, abs(e.output - e.baseline_output))
    assert explain.explain(lm, POSITIVE, "rating", 4).label == "rating"
    with pytest.raises(PredictError, match="explain_label: 'pos' is not this model's output"):
        explain.explain(lm, POSITIVE, "pos", 4)


def test_multi_label_explains_each_chosen_label(data_dir, tmp_path, predictor):
    run = _train(tmp_path / "mesh", "--train_file", data_dir / "mesh.jsonl", "--label_column", "labels",
                 "--max_steps", 6, "--learning_rate", 2e-4, "--eval_steps", 6)
    lm = predictor.load(run)
    text = pip_sets.medline_mesh(labels=4)[300]["text"]  # an abstract the run never saw
    scores = predictor.predict_text(run, text)
    assert len(scores) == 4
    default = explain.explain(lm, text, None, 16)
    assert default.label == next(iter(scores))  # the highest-scoring label
    for name in list(scores)[:2]:
        e = explain.explain(lm, text, name, 16)
        p = scores[name]
        assert e.label == name and e.output == pytest.approx(math.log(p / (1 - p)), abs=1e-3)  # its own logit
        assert abs(e.total - (e.output - e.baseline_output)) < 0.01 * max(1.0, abs(e.output - e.baseline_output))
    assert explain.explain(lm, text, list(scores)[1], 16).words != default.words


def test_mnist_saliency_has_the_images_shape(tmp_path, predictor, monkeypatch):
    from PIL import Image

    from engine.bundled import BUNDLED
    from engine.errors import ModelError
    from engine.tasks.text_classification.explain import embedding_layer

    run = _train(tmp_path / "mnist", "--model_name_or_path", "mlp", "--dataset_name", "bundled:mnist",
                 "--max_steps", 40, "--learning_rate", 2e-3, "--per_device_train_batch_size", 32,
                 "--mixed_precision", "no", "--max_train_samples", 1000, "--eval_steps", 40)
    digit = BUNDLED["bundled:mnist"][0]()["test"][0]["image"]  # a real test digit, 28x28 grayscale
    lm = predictor.load(run)
    e = explain.explain(lm, digit, None, 32)
    assert e.label == next(iter(predictor.predict_image(run, digit)))
    assert e.image.shape == (28, 28, 3) and e.image.dtype == np.uint8 and e.words == []
    assert abs(e.total - (e.output - e.baseline_output)) < 0.01 * max(1.0, abs(e.output - e.baseline_output))
    # from a black baseline, black pixels have nothing to attribute: the saliency lies on the strokes only
    ink = np.asarray(digit) > 0
    tinted = (e.image[..., 0] != e.image[..., 1]) | (e.image[..., 1] != e.image[..., 2])  # colour, not grey
    assert (e.image[~ink] == 0).all() and not tinted[~ink].any() and tinted[ink].mean() > 0.5
    big = explain.explain(lm, digit.resize((112, 84)), None, 8)
    assert big.image.shape == (84, 112, 3)

    with pytest.raises(ModelError, match="has no input embedding layer"):  # a real model without one
        embedding_layer(lm.model, lm.name)

    png = tmp_path / "digit.png"
    Image.fromarray(np.asarray(digit)).save(png)
    monkeypatch.chdir(tmp_path)  # the command line writes the overlay into the working folder
    assert predict_main(["--model", run, "--image", str(png), "--explain", "--json"]) == 0
    assert np.asarray(Image.open(tmp_path / "digit.saliency.png")).shape == (28, 28, 3)


def test_the_command_line_prints_words_and_the_delta(sentiment_run, capsys):
    assert predict_main(["--model", sentiment_run, "--text", POSITIVE, "--explain", "--explain_steps", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == POSITIVE  # not a terminal: the text plain, then its words sorted
    assert out[1].split() == [out[1].split()[0], "greatest"] and float(out[1].split()[0]) > 0
    assert out[-2].startswith("explained: pos, toward 'pos'")
    assert out[-1].startswith("Integrated Gradients, 20 steps, convergence delta ")
    assert predict_main(["--model", sentiment_run, "--text", NEGATIVE, "--explain", "--explain_label", "pos",
                         "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["label"] == "pos" and said["steps"] == 50 and said["total"] < 0
    assert [w for w, _ in said["words"]] == NEGATIVE.split() and abs(said["delta"]) < 0.01


@pytest.mark.parametrize("extra, line", [
    (["--text", "good", "--backend", "onnx"], "explain: '{run}' is served by the onnx backend, an onnxruntime "
                                              "graph with no embedding layer"),
    (["--text", "good", "--explain_label", "sports"], "explain_label: 'sports' is not a label of this model "
                                                      "(neg, pos)"),
    (["--text", "good", "--explain_steps", "0"], "explain_steps: 0 is outside 1 to 500"),
    (["--text", "good", "--explain_steps", "100000"], "explain_steps: 100000 is outside 1 to 500"),
    (["--text", "   "], "text: empty; type or paste some text to explain"),
    (["--text", ""], "text: empty; type or paste some text to explain"),
    (["--input", "reviews.csv"], "explain: one text or image at a time"),
    (["--image", str(ROOT / "ui/assets/digits/mnist_3.png")], "model: '{run}' is a text-classification model; it reads text"),
], ids=["onnx", "label", "steps0", "steps_huge", "blank", "empty", "file", "image_for_text"])
def test_bad_input_is_one_line_and_exit_2(sentiment_run, capsys, extra, line):
    assert predict_main(["--model", sentiment_run, "--explain", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hubtune: error: {line.format(run=sentiment_run)}"), err
