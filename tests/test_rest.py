"""The REST endpoint (engine/serving/rest.py) on the launched app, like a deployed Space: huggingface_hub's own
InferenceClient gets the Predictor's labels, TEI's /predict, /info and /health answer, multi-label and regression
runs answer in the same format, every bad request is a 4xx JSON error with a message (the app serving on), a token
is required when one is set, and concurrent requests share Predictor calls."""

import contextlib
import json
import shutil
import threading
from unittest import mock

import httpx
import numpy as np
import pytest

from _app_fixtures import free_port, patient_url_ok
from engine.data import BUNDLED
from engine.serving import batcher, endpoint as serving
from engine.serving.predictor import shared_predictor

LABELS = ["business", "entertainment", "politics", "sports", "tech"]
TOKEN = "hubtune-test-token-7f3a9"


def _derived_run(tiny_run, out, problem_type):
    """A finished run holding the tiny run's real weights under another head: multi-label over the same five labels
    (sigmoid per label, tuned-looking thresholds), or regression from the first logit (one output named 'rating')."""
    from safetensors.torch import load_file, save_file

    (out / "model").mkdir(parents=True)
    for name in ("status.json", "config.yaml"):
        shutil.copy(tiny_run / name, out / name)
    for f in (tiny_run / "model").iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / "model" / f.name)
    config = json.loads((tiny_run / "model" / "config.json").read_text())
    weights = load_file(str(tiny_run / "model" / "model.safetensors"))
    config["problem_type"] = problem_type
    if problem_type == "regression":
        weights = {k: (v[:1].clone() if k.startswith("classifier.") else v) for k, v in weights.items()}
        config.update(id2label={"0": "rating"}, label2id={"rating": 0}, label_range=[-4.0, 4.0])
    else:
        config["thresholds"] = dict(zip(LABELS, (0.3, 0.4, 0.5, 0.5, 0.35)))
    save_file(weights, str(out / "model" / "model.safetensors"), metadata={"format": "pt"})
    (out / "model" / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    from _run_view_fixtures import DIGITS_ARGS
    from engine.training.run import main

    runs = tmp_path_factory.mktemp("rest_runs")
    (runs / "tiny").symlink_to(tiny_run, target_is_directory=True)
    _derived_run(tiny_run, runs / "mesh", "multi_label_classification")
    _derived_run(tiny_run, runs / "group" / "rating", "regression")  # a run two levels deep: /models/group/rating
    # an image run (the mlp, 3 steps on real 8x8 digits), the newest: a text endpoint neither serves nor offers it
    assert main([*DIGITS_ARGS, "--output_dir", str(runs / "digits")]) == 0
    return runs


@contextlib.contextmanager
def _served(runs, **env):
    """The whole app on `runs` with its REST routes, launched as app.main launches it (settings from `env`)."""
    import app

    with pytest.MonkeyPatch.context() as mp:
        for key in ("HUBTUNE_API_TOKEN", "SPACE_ID", "HUBTUNE_API_MODELS", "HUBTUNE_API_DEFAULT_MODEL"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        demo = app.build_app(runs_dir=runs)
        options = app.serve_options(demo)  # reads the settings now, as at start-up
    demo.queue(default_concurrency_limit=1)
    with mock.patch("gradio.networking.url_ok", patient_url_ok):  # a busy machine answers late (_app_fixtures)
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **options)
    try:
        yield url.rstrip("/")
    finally:
        demo.close()


@pytest.fixture(scope="module")
def url(runs):
    with _served(runs, HUBTUNE_API_DEFAULT_MODEL="tiny") as u:
        yield u


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=300) as c:
        yield c


@pytest.fixture
def online(monkeypatch):
    """InferenceClient refuses every URL under HF_HUB_OFFLINE, 127.0.0.1 included; the traffic here stays local."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def headlines():
    # short real texts, all five topics: the opening of BBC articles (headline and lead), ~20 tokens
    return [t[:101].rsplit(" ", 1)[0] for t in BUNDLED["bundled:bbc_news"][0]()["text"][7::97]]


def test_inference_client_gets_the_predictors_labels(url, runs, headlines, online):
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=f"{url}/models/tiny")
    for text in headlines[:6]:
        got = client.text_classification(text)
        want = shared_predictor().predict_text(str(runs / "tiny"), text)  # alone, like the request: same batch
        assert [o.label for o in got] == list(want) and sorted(o.label for o in got) == LABELS
        assert [o.score for o in got] == pytest.approx(list(want.values()), abs=1e-5)
    top = client.text_classification(headlines[0], top_k=2)
    assert [o.label for o in top] == list(shared_predictor().predict_text(str(runs / "tiny"), headlines[0]))[:2]


def test_lists_top_k_and_function_to_apply(http, headlines):
    texts = headlines[:3]
    probs = http.post("/models/tiny", json={"inputs": texts}).json()
    logits = http.post("/models/tiny", json={"inputs": texts, "parameters": {"function_to_apply": "none"}}).json()
    sig = http.post("/models/tiny", json={"inputs": texts, "parameters": {"function_to_apply": "sigmoid",
                                                                          "top_k": 2}}).json()
    assert len(probs) == len(logits) == len(sig) == 3
    for p, z, s in zip(probs, logits, sig):
        p, z = {o["label"]: o["score"] for o in p}, {o["label"]: o["score"] for o in z}
        assert abs(sum(p.values()) - 1) < 1e-4 and abs(sum(z.values()) - 1) > 1e-3  # raw logits, not probabilities
        e = {k: np.exp(v - max(z.values())) for k, v in z.items()}
        assert {k: v / sum(e.values()) for k, v in e.items()} == pytest.approx(p, abs=1e-4)
        assert len(s) == 2 and s[0]["score"] == pytest.approx(1 / (1 + np.exp(-max(z.values()))), abs=1e-4)


def test_tei_predict_info_and_health(http, runs, headlines):
    assert http.get("/health").json() == {"status": "ok"}
    one = http.post("/predict", json={"inputs": headlines[0]}).json()
    assert isinstance(one, list) and [o["label"] for o in one] == [o["label"] for o in http.post(
        "/models/tiny", json={"inputs": headlines[0]}).json()[0]]  # /predict serves the default model
    many = http.post("/predict", json={"inputs": headlines[:2], "raw_scores": True}).json()
    assert len(many) == 2 and abs(sum(o["score"] for o in many[0]) - 1) > 1e-3
    info = http.get("/info").json()
    lm = shared_predictor().load(str(runs / "tiny"))
    assert info["model_id"] == "tiny" and info["labels"] == LABELS and info["max_input_length"] == 32
    assert info["model_type"]["classifier"]["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    assert info["precision"] == (lm.auto or shared_predictor().precision) and info["precision"] != "auto"
    assert info["problem_type"] == "single_label_classification" and info["max_client_batch_size"] == 256
    assert "/" not in info["model_id"] and info["revision"] is None  # a run: no server folder shown, no commit
    mesh = http.get("/info", params={"model": "mesh"}).json()
    assert mesh["scores"] == "sigmoid" and set(mesh["head_settings"]["thresholds"]) == set(LABELS)


def test_multi_label_and_regression_runs(http, url, runs, headlines, online):
    from huggingface_hub import InferenceClient

    text = headlines[1]
    got = http.post("/models/mesh", json={"inputs": text}).json()[0]
    want = shared_predictor().predict_text(str(runs / "mesh"), text)  # a sigmoid per label, highest first
    assert [o["label"] for o in got] == list(want) and [o["score"] for o in got] == pytest.approx(
        list(want.values()), abs=1e-5)
    assert all(0 < o["score"] < 1 for o in got) and abs(sum(o["score"] for o in got) - 1) > 1e-3
    soft = http.post("/models/mesh", json={"inputs": text, "parameters": {"function_to_apply": "softmax"}}).json()
    assert abs(sum(o["score"] for o in soft[0]) - 1) < 1e-4
    rating = InferenceClient(base_url=f"{url}/models/group/rating").text_classification(text)
    value = shared_predictor().predict_text(str(runs / "group" / "rating"), text)["rating"]
    assert [o.label for o in rating] == ["rating"] and rating[0].score == pytest.approx(value, abs=1e-5)


# (method, path, body, expected status, words the message must contain)
BAD = [
    ("/models/tiny", b"{not json", 400, "not valid JSON"),
    ("/models/tiny", b'{"inputs": []}', 422, "empty list"),
    ("/models/tiny", b'{"inputs": "   "}', 422, "empty text"),
    ("/models/tiny", b'{"text": "x"}', 422, "inputs: missing"),
    ("/models/tiny", b'["x"]', 422, "JSON object"),
    ("/models/tiny", json.dumps({"inputs": ["a short text"] * 10_000}).encode(), 413, "10,000 texts"),
    ("/models/tiny", json.dumps({"inputs": "x" * (2 << 20)}).encode(), 413, "HUBTUNE_API_MAX_BODY_MB"),
    ("/models/tiny", b'{"inputs": ["ok", 5]}', 422, "inputs[1]: a text expected"),
    ("/models/tiny", b'{"inputs": [["a", "b"]]}', 422, "text pairs"),
    ("/models/tiny", b'{"inputs": "x", "parameters": {"top_k": 0}}', 422, "top_k"),
    ("/models/tiny", b'{"inputs": "x", "parameters": {"function_to_apply": "tanh"}}', 422, "function_to_apply"),
    ("/models/tiny", b'{"inputs": "x", "parameters": {"temperature": 2}}', 422, "unknown temperature"),
    ("/models/no-such-run", b'{"inputs": "x"}', 404, "not a finished run"),
    ("/models/someone/some-model", b'{"inputs": "x"}', 404, "allowed Hub id"),
    ("/models/..%2F..%2Fetc", b'{"inputs": "x"}', 404, "not a finished run"),
    ("/predict", b'{"inputs": "x", "raw_scores": "yes"}', 422, "raw_scores"),
]


def test_every_bad_request_is_a_4xx_with_a_message_and_the_app_serves_on(http, headlines):
    for path, body, status, words in BAD:
        r = http.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, body[:60], r.status_code, r.text[:300])
        error = r.json()["error"]
        assert words in error and "Traceback" not in error, (path, error)
    assert http.post("/models/tiny", json={"inputs": headlines[0]}).status_code == 200
    assert http.get("/").status_code == 200  # the web app too


def test_a_token_is_required_when_set(runs, headlines, online):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    with _served(runs, HUBTUNE_API_TOKEN=TOKEN) as u, httpx.Client(base_url=u, timeout=300) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
            r = c.post("/models/tiny", json={"inputs": "x"}, headers=headers)
            assert r.status_code == 401 and "authorization" in r.json()["error"] and TOKEN not in r.text
        assert c.get("/info").status_code == 401 and c.get("/health").status_code == 200
        with pytest.raises(HfHubHTTPError, match="401"):
            InferenceClient(base_url=f"{u}/models/tiny", api_key="wrong").text_classification(headlines[0])
        got = InferenceClient(base_url=f"{u}/models/tiny", api_key=TOKEN).text_classification(headlines[0])
        assert got[0].label == next(iter(shared_predictor().predict_text(str(runs / "tiny"), headlines[0])))
        assert c.get("/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()["model_id"] in (
            "tiny", "mesh", "group/rating")
    space = serving.Settings(on_space=True)  # a Space without the secret serves no one
    with pytest.raises(serving.ApiError, match="HUBTUNE_API_TOKEN"):
        serving.check_token(space, f"Bearer {TOKEN}")


def test_concurrent_requests_share_predictor_calls(http, url, runs, headlines):
    b = batcher.shared()
    texts = headlines[:20]
    want = [next(iter(shared_predictor().predict_text(str(runs / "tiny"), t))) for t in texts]
    before_calls, before_requests = b.calls, b.requests
    got = [None] * 40

    def client(i):
        with httpx.Client(base_url=url, timeout=300) as c:
            for k in (i, i + 20):
                r = c.post("/models/tiny", json={"inputs": texts[k % 20]})
                got[k] = r.json()[0][0]["label"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == want + want
    requests, calls = b.requests - before_requests, b.calls - before_calls
    assert requests == 40 and calls < requests, f"{calls} Predictor calls for {requests} requests"


def test_a_busy_job_runner_does_not_block_prediction(http, runs, headlines):
    from engine.runs.jobs import JobManager

    with JobManager(runs)._lock():  # what poll() holds while it starts or reaps a training run
        assert http.post("/models/tiny", json={"inputs": headlines[2]}, timeout=60).status_code == 200


def test_load_bench_quick_runs_end_to_end(runs, tmp_path):
    """bench/serve_load.py --quick against `python app.py` on the tiny run: every column, one at a time exact."""
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, "bench/serve_load.py", "--quick", "--runs_dir", str(runs), "--model", "tiny",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    alone, batched = report["figures"]["one at a time"], report["figures"]["8 clients"]
    assert alone["correct"] == alone["requests"] == batched["requests"] == 40 and not batched["failures"]
    assert alone["predictor_calls"] == 40 and batched["predictor_calls"] < 40  # the clients shared calls
    assert report["ratio"] > 0 and "whole process wall time" in proc.stdout


# (method, path, status, words the one-line error must contain): the endpoint's paths refused by the server itself
UNROUTED = [
    ("GET", "/models/tiny", 405, "method: GET is not served on /models/tiny; use POST"),
    ("GET", "/models", 405, "use POST"),
    ("GET", "/predict", 405, "use POST"),
    ("POST", "/info", 405, "use GET"),
    ("DELETE", "/health", 405, "use GET"),
    ("POST", "/models", 404, "model: missing; POST /models/<name>"),
    ("GET", "/predict/x", 404, "path: no route /predict/x; the endpoint answers POST /models/<name>"),
    ("GET", "/info/tiny", 404, "path: no route /info/tiny"),
    ("GET", "/v1/models", 404, "path: no route /v1/models"),
    ("POST", "/model/tiny", 404, "GET /health"),
]


def test_every_refusal_of_the_endpoints_paths_is_one_json_line(http, headlines):
    """Wrong methods and paths no route answers get the endpoint's `{"error"}` (status kept, 405 with Allow), not
    the server's `{"detail"}`; the unknown-model 404 offers only the runs the endpoint serves, and an image run is
    refused by name (422) without being loaded."""
    for method, path, status, words in UNROUTED:
        r = http.request(method, path, json={"inputs": headlines[0]})
        assert r.status_code == status and list(r.json()) == ["error"], (method, path, r.status_code, r.text)
        assert words in r.json()["error"] and "\n" not in r.json()["error"], (method, path, r.text)
        if status == 405:  # the method it names is the one the Allow header has
            assert words.split("use ")[1].split()[0] in r.headers["allow"].split(", "), r.headers
    assert http.get("/gradio_api/no-such-route").json() == {"detail": "Not Found"}  # Gradio's clients read its shape
    error = http.post("/models/no-such-run", json={"inputs": "x"}).json()["error"]
    offered, _, rest = error.partition("not served here (images): ")
    assert all(name in offered for name in ("tiny", "mesh", "group/rating")) and "digits" not in offered, error
    assert rest.startswith("digits"), error
    r = http.post("/models/digits", json={"inputs": headlines[0]})
    assert r.status_code == 422 and r.json() == {"error": "model: 'digits' is an image-classification model; this "
                                                          "endpoint classifies text"}
    assert all("digits" not in str(key) for key in shared_predictor().cache.keys()), "an image run was loaded"


def test_the_default_model_is_pinned_at_start_and_named_in_every_reply(runs, tiny_run, tmp_path, headlines):
    """/predict and /info serve the newest finished text run of when the server started (with none then, the first
    one a request finds), not whatever finished last; HUBTUNE_API_DEFAULT_MODEL (a run name or a folder) overrides
    it, and every answer names its model in X-Hubtune-Model."""
    empty, mine = tmp_path / "empty", tmp_path / "mine"
    empty.mkdir()
    mine.mkdir()
    (mine / "tiny").symlink_to(tiny_run, target_is_directory=True)
    with _served(mine) as u, _served(empty) as later, httpx.Client(timeout=300) as c:
        refused = c.post(f"{later}/predict", json={"inputs": headlines[0]})
        assert refused.status_code == 404 and "no finished text run" in refused.json()["error"]
        (empty / "tiny").symlink_to(tiny_run, target_is_directory=True)  # the first text run a request finds
        assert c.post(f"{later}/predict", json={"inputs": headlines[0]}).headers["x-hubtune-model"] == "tiny"
        _derived_run(tiny_run, mine / "mesh", "multi_label_classification")  # finished after start-up, newest
        (empty / "mesh").symlink_to(mine / "mesh", target_is_directory=True)
        for base in (u, later):
            for _ in range(2):
                r = c.post(f"{base}/predict", json={"inputs": headlines[0]})
                assert r.status_code == 200 and r.headers["x-hubtune-model"] == "tiny", (base, r.text)
                assert [o["label"] for o in r.json()] == [o["label"] for o in c.post(
                    f"{base}/models/tiny", json={"inputs": headlines[0]}).json()[0]]  # softmax, not mesh's sigmoids
            info = c.get(f"{base}/info")
            assert info.headers["x-hubtune-model"] == "tiny" and info.json()["model_id"] == "tiny"
            assert info.json()["default_model"] == "tiny"
        assert c.post(f"{u}/models/mesh", json={"inputs": "x"}).headers["x-hubtune-model"] == "mesh"
        assert c.get(f"{u}/info", params={"model": "mesh"}).headers["x-hubtune-model"] == "mesh"
        bad = c.post(f"{u}/predict", json={"inputs": ""})  # a refusal once the model is known names it too
        assert bad.status_code == 422 and bad.headers["x-hubtune-model"] == "tiny"
        (mine / "tiny").unlink()  # the pinned run gone: said, not silently replaced by mesh
        gone = c.post(f"{u}/predict", json={"inputs": headlines[0]})
        assert gone.status_code == 404 and "default model 'tiny' (pinned until the server restarts)" in \
            gone.json()["error"]
    # the setting: a run name (the module's server), or a run's or model's folder, named as a client calls it
    with _served(runs, HUBTUNE_API_DEFAULT_MODEL=str(runs / "mesh" / "model")) as u, httpx.Client(timeout=300) as c:
        r = c.post(f"{u}/predict", json={"inputs": headlines[0]})
        assert r.headers["x-hubtune-model"] == "mesh" and c.get(f"{u}/info").json()["default_model_source"] == \
            "HUBTUNE_API_DEFAULT_MODEL"
    target, _ = serving.pin_default(runs, serving.Settings(default_model=str(tiny_run)))
    assert (target.name, target.model) == ("tiny", str(tiny_run))


@pytest.mark.parametrize("value, words", [
    ("no-such-run", "HUBTUNE_API_DEFAULT_MODEL: 'no-such-run' is not a finished run in "),
    ("/nowhere/run", "HUBTUNE_API_DEFAULT_MODEL: '/nowhere/run' is not a finished run in "),
    ("digits", "HUBTUNE_API_DEFAULT_MODEL: 'digits' is an image-classification model; the REST endpoint classifies "
               "text"),
], ids=["unknown-run", "missing-folder", "image-run"])
def test_a_default_model_setting_that_names_nothing_servable_stops_the_app(runs, value, words, monkeypatch, capsys):
    import gradio as gr

    import app

    monkeypatch.setenv("HUBTUNE_API_DEFAULT_MODEL", value)
    monkeypatch.setenv("HUBTUNE_RUNS_DIR", str(runs))
    monkeypatch.setattr(gr.Blocks, "launch", lambda *a, **k: pytest.fail("the app must not serve"))
    assert app.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hubtune: error: {words}") and "\n" not in err, err
