"""Data loading on real BBC News articles written to every supported file format, and each bad-input case."""

import json

import pandas as pd
import pytest

from engine.config import TrainConfig
from engine.data import BUNDLED, DataError
from engine.tasks import load_splits
from engine.tasks.text_classification.data import tokenize_splits


@pytest.fixture(scope="module")
def bbc() -> pd.DataFrame:
    df = pd.DataFrame(BUNDLED["bundled:bbc_news"][0]())
    # 24 real articles per topic, in a stable order
    return df.groupby("label", group_keys=False).head(24).reset_index(drop=True)


def cfg_for(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(output_dir=str(tmp_path / "out"), **kw)


def test_bundled_bbc_news_is_real():
    cols = BUNDLED["bundled:bbc_news"][0]()
    assert len(cols["text"]) == 2225
    assert sorted(set(cols["label"])) == ["business", "entertainment", "politics", "sports", "tech"]
    assert any("Ink helps drive democracy in Asia" in t for t in cols["text"])


@pytest.mark.parametrize("ext", [".csv", ".json", ".jsonl", ".parquet"])
def test_every_file_format_with_custom_columns(tmp_path, bbc, ext):
    df = bbc.rename(columns={"text": "article", "label": "topic"})
    path = tmp_path / f"train{ext}"
    {".csv": lambda: df.to_csv(path, index=False),
     ".json": lambda: df.to_json(path, orient="records", lines=True),
     ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
     ".parquet": lambda: df.to_parquet(path)}[ext]()
    splits = load_splits(cfg_for(tmp_path, train_file=str(path), text_column="article", label_column="topic",
                                 validation_split_percentage=25))
    assert splits.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(splits.train) + len(splits.validation) == len(df)
    # stratified: every class is in validation in its share (24 * 25% = 6 each)
    counts = pd.Series(splits.validation["label"]).value_counts()
    assert sorted(counts.tolist()) == [6] * 5
    assert splits.id2label[3] == "sports" and splits.label2id["tech"] == 4


def test_integer_labels_and_explicit_validation_file(tmp_path, bbc):
    df = bbc.assign(label=bbc["label"].map({"business": 0, "entertainment": 1, "politics": 2, "sports": 3,
                                            "tech": 4}))
    df.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[100:].to_csv(tmp_path / "val.csv", index=False)
    splits = load_splits(cfg_for(tmp_path, train_file=str(tmp_path / "train.csv"),
                                 validation_file=str(tmp_path / "val.csv")))
    assert splits.label_names == ["0", "1", "2", "3", "4"]
    assert len(splits.validation) == 20
    assert splits.validation.features["label"].names == splits.label_names


def test_text_pairs_tokenize_without_padding(tmp_path, bbc):
    from engine.modeling import load_tokenizer, offline_default_path

    df = pd.DataFrame({"premise": bbc["text"].str[:200], "hypothesis": bbc["text"].str[200:300],
                       "label": bbc["label"]})
    df.to_json(tmp_path / "pairs.jsonl", orient="records", lines=True)
    splits = load_splits(cfg_for(tmp_path, train_file=str(tmp_path / "pairs.jsonl"), text_column="premise",
                                 text_pair_column="hypothesis"))
    tok = tokenize_splits(splits, load_tokenizer(offline_default_path()), max_seq_length=64)
    lengths = tok["train"]["length"]
    assert max(lengths) == 64 and min(lengths) < 64  # long pairs truncated, short ones not padded
    assert all(len(ids) == n for ids, n in zip(tok["train"]["input_ids"], lengths))
    assert 102 in tok["train"][0]["input_ids"][1:-1]  # [SEP] between the two texts
    val_lengths = tok["validation"]["length"]
    assert val_lengths == sorted(val_lengths, reverse=True)  # eval batches are length-sorted


BAD = [
    # (what, file writer, config extra, message fragment)
    ("missing text column", lambda p, df: df.rename(columns={"text": "body"}).drop(columns=[]).to_csv(p, index=False),
     {"text_column": "content"}, "text_column: column 'content' not in"),
    ("missing label column", lambda p, df: df.to_csv(p, index=False), {"label_column": "category"},
     "label_column: column 'category' not in"),
    ("text column is the label column", lambda p, df: df.to_csv(p, index=False),
     {"text_column": "text", "label_column": "text"}, "label_column: 'text' is also the text column"),
    ("numbers as the text", lambda p, df: df.assign(id=range(len(df))).to_csv(p, index=False), {"text_column": "id"},
     "text_column: column 'id' of"),
    # the article's length in hundreds of characters: a real measurement, not a class
    # (left to problem_type: auto, decimal numbers are a regression target: tests/test_heads.py)
    ("decimal numbers as classes", lambda p, df: df.assign(length=df.text.str.len() / 100).to_csv(p, index=False),
     {"label_column": "length", "problem_type": "single_label_classification"}, "holds decimal numbers (e.g."),
    ("row ids as labels", lambda p, df: df.assign(row=range(len(df))).to_csv(p, index=False),
     {"label_column": "row"}, "has 120 different values in 120 rows, so it holds ids or texts"),
    ("one class", lambda p, df: df.assign(label="sports").to_csv(p, index=False), {}, "only one class"),
    ("nan labels", lambda p, df: df.assign(label=[None] + list(df["label"][1:])).to_csv(p, index=False), {},
     "empty/NaN labels"),
    ("empty file", lambda p, df: p.write_text(""), {}, "is empty"),
    ("header only", lambda p, df: p.write_text("text,label\n"), {}, "no rows"),
    ("not utf-8", lambda p, df: p.write_bytes(df.to_csv(index=False).encode("utf-8") + "caf\u00e9,tech\n".encode("cp1252")),
     {}, "not UTF-8"),
    ("garbage csv", lambda p, df: p.write_bytes(b'text,label\n"unterminated,\x00\x01\n' * 3), {}, "train_file"),
]


@pytest.mark.parametrize("what,write,extra,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_data_gives_one_clear_line(tmp_path, bbc, what, write, extra, fragment):
    path = tmp_path / "train.csv"
    write(path, bbc)
    with pytest.raises(DataError) as e:
        load_splits(cfg_for(tmp_path, train_file=str(path), **extra))
    assert fragment in str(e.value)
    assert all("\n" not in p for p in e.value.problems)


def test_validation_labels_unseen_in_training(tmp_path, bbc):
    bbc[bbc.label != "tech"].to_csv(tmp_path / "train.csv", index=False)
    bbc.to_csv(tmp_path / "val.csv", index=False)
    with pytest.raises(DataError, match="labels not seen in training: tech"):
        load_splits(cfg_for(tmp_path, train_file=str(tmp_path / "train.csv"),
                            validation_file=str(tmp_path / "val.csv")))


def test_hub_dataset_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset_name: could not load 'nobody/no-such-dataset'"):
        load_splits(cfg_for(tmp_path, dataset_name="nobody/no-such-dataset"))


def test_json_records_array(tmp_path, bbc):
    (tmp_path / "train.json").write_text(json.dumps({"data": bbc.to_dict(orient="records")}))
    with pytest.raises(DataError):  # a nested object is not a table: clear error rather than a crash
        load_splits(cfg_for(tmp_path, train_file=str(tmp_path / "train.json")))
