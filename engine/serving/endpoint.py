"""What the REST endpoint serves and speaks, apart from HTTP (engine/serving/rest.py carries it): its settings, which
models it may load, the two request formats it reads and the answers it writes, and its errors (status code + one line).

Formats:
- the Hugging Face Inference API's text-classification task (`POST /models/{model}`): `{"inputs": str | [str],
  "parameters": {"top_k": int, "function_to_apply": "softmax" | "sigmoid" | "none"}}` -> one list per text of
  `{"label", "score"}`, best first (every label unless top_k), so `[[...]]` for a single string, as
  `huggingface_hub.InferenceClient(base_url=".../models/NAME").text_classification(...)` expects.
- text-embeddings-inference's `POST /predict`: `{"inputs": str | [str], "raw_scores": bool}` -> `[{"label",
  "score"}]` for a string, one such list per text for a list. Each text is one sequence (no text pairs).
What a score is comes from the model's head, as transformers' pipeline decides it: single-label classifiers give a
softmax over the labels, multi-label ones a sigmoid per label (every label, highest first; the ones over their
tuned thresholds are not marked: `GET /info` has the thresholds), regression models one `{"label": <output name>,
"score": <the predicted number>}`. `function_to_apply` (or TEI's `raw_scores`: "none") applies another function
to the logits instead. Texts are truncated as in prediction (the run's max_seq_length), never refused for length.

Models: `{model}` is a finished run's name in the app's runs folder (`bbc` for runs/bbc, `group/x` two levels deep),
else a Hub id that is listed in HUBTUNE_API_MODELS (comma-separated; `*`: any) or already in the local Hub cache:
a request never makes the server download a model nobody chose. A run's name wins over a Hub id spelled alike.
`/predict` and `/info` serve one model fixed at start-up (`pin_default`): HUBTUNE_API_DEFAULT_MODEL (a run name, a
run or model folder, or such a Hub id; the server refuses to start when it names nothing servable), else the newest
finished text run when the server started (or, with none yet, the first one a request finds; it then stays). Every
answer names the model that gave it (the X-Hubtune-Model header; `model_id` in /info).

Settings (environment, read at start-up): HUBTUNE_API_TOKEN (bearer token; required on a Space: without it the
endpoint answers 401 there), HUBTUNE_API_MAX_INPUTS (texts per request, 256), HUBTUNE_API_MAX_BODY_MB (1).
Importing this module does not import torch.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.rundir import RunDir, is_run, list_runs

FUNCTIONS = ("softmax", "sigmoid", "none")
# what the head's own scores already are (transformers' pipeline picks the function from problem_type alike)
HEAD_FUNCTION = {"single_label_classification": "softmax", "multi_label_classification": "sigmoid",
                 "regression": "none"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RUN_DEPTH = 2  # as deep as the runs listing looks (runs/x, runs/group/x)


class ApiError(Exception):
    """A request the endpoint refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Settings:
    token: str | None = None
    on_space: bool = False
    allowed: frozenset = frozenset()  # Hub ids the endpoint may load ("*": any)
    default_model: str | None = None
    max_inputs: int = 256
    max_body: int = 1 << 20

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        allowed = frozenset(m.strip() for m in (env.get("HUBTUNE_API_MODELS") or "").split(",") if m.strip())
        return cls(token=env.get("HUBTUNE_API_TOKEN") or None, on_space=bool(env.get("SPACE_ID")), allowed=allowed,
                   default_model=(env.get("HUBTUNE_API_DEFAULT_MODEL") or "").strip() or None,
                   max_inputs=int(env.get("HUBTUNE_API_MAX_INPUTS") or 256),
                   max_body=int(float(env.get("HUBTUNE_API_MAX_BODY_MB") or 1) * (1 << 20)))


def check_token(settings: Settings, authorization: str | None) -> None:
    """Refuse (401) a request without the right bearer token, where one is required."""
    if not settings.token:
        if settings.on_space:  # a public Space must not serve its models to anyone who finds the URL
            raise ApiError(401, "authorization: this Space's REST API is off until its owner sets the "
                                "HUBTUNE_API_TOKEN secret; then send 'Authorization: Bearer <token>'")
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "authorization: this endpoint needs 'Authorization: Bearer <token>' (HUBTUNE_API_TOKEN)")
    # constant time: how much of a guess matches must not show in the reply's timing
    if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise ApiError(401, "authorization: wrong token")


# --- requests ----------------------------------------------------------------------------------------------------


@dataclass
class Request:
    texts: list[str]
    single: bool  # inputs was one string (the answer drops one level of lists where the format says so)
    top_k: int | None = None
    function: str | None = None  # None: the head's own scores


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "body: not UTF-8 JSON") from None
    except ValueError as e:
        raise ApiError(400, f"body: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"body: a JSON object with 'inputs' expected, got {type(data).__name__}")
    return data


def _inputs(data: dict, settings: Settings) -> tuple[list[str], bool]:
    if "inputs" not in data:
        raise ApiError(422, "inputs: missing; send {\"inputs\": \"some text\"} or a list of texts")
    value = data["inputs"]
    single = isinstance(value, str)
    texts = [value] if single else value
    if not isinstance(texts, list):
        raise ApiError(422, f"inputs: a text or a list of texts expected, got {type(value).__name__}")
    if not texts:
        raise ApiError(422, "inputs: empty list; send at least one text")
    if len(texts) > settings.max_inputs:
        raise ApiError(413, f"inputs: {len(texts):,} texts in one request; at most {settings.max_inputs:,} "
                            "(HUBTUNE_API_MAX_INPUTS): send them in several requests")
    for i, text in enumerate(texts):
        where = "inputs" if single else f"inputs[{i}]"
        if isinstance(text, list):
            raise ApiError(422, f"{where}: text pairs are not supported; these models read one text each")
        if not isinstance(text, str):
            raise ApiError(422, f"{where}: a text expected, got {type(text).__name__}")
        if not text.strip():
            raise ApiError(422, f"{where}: empty text; send some text to classify")
    return texts, single


def parse_inference_api(body: bytes, settings: Settings) -> Request:
    """A text-classification request of the Hugging Face Inference API (see the module)."""
    data = _json(body)
    texts, single = _inputs(data, settings)
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(422, "parameters: a JSON object expected")
    unknown = sorted(set(params) - {"top_k", "function_to_apply"})
    if unknown:
        raise ApiError(422, f"parameters: unknown {', '.join(unknown)}; text classification takes top_k and "
                            "function_to_apply")
    top_k = params.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ApiError(422, f"parameters.top_k: a whole number >= 1 expected, got {top_k!r}")
    function = params.get("function_to_apply")
    if function is not None and function not in FUNCTIONS:
        raise ApiError(422, f"parameters.function_to_apply: '{function}' is not one of {', '.join(FUNCTIONS)}")
    return Request(texts, single, top_k, function)


def parse_tei(body: bytes, settings: Settings) -> Request:
    """A text-embeddings-inference `/predict` request (see the module)."""
    data = _json(body)
    texts, single = _inputs(data, settings)
    raw = data.get("raw_scores", False)
    if not isinstance(raw, bool):
        raise ApiError(422, f"raw_scores: true or false expected, got {raw!r}")
    return Request(texts, single, None, "none" if raw else None)


def wants_logits(request: Request, head) -> bool:
    """Whether the request needs the logits rather than the head's own scores."""
    return request.function is not None and request.function != HEAD_FUNCTION.get(head.problem_type)


# --- models ------------------------------------------------------------------------------------------------------


def _reads_text(model_dir: Path) -> str | None:
    """None when the saved model classifies text, else what it is ("an image-classification model"), judged from its
    config.json alone."""
    from engine import tasks
    from engine.errors import ConfigError

    try:
        task = tasks.for_model(model_dir)
    except ConfigError:
        return "not a classifier hubtune reads"
    return None if task.input_kind == "text" else f"an {task.tag} model"


def served_runs(runs_dir: Path) -> tuple[list[str], list[str]]:
    """(the finished runs `{model}` may be, the finished runs it may not: image runs), names newest first."""
    root, text, other = Path(runs_dir), [], []
    for run in list_runs(root, finished=True):
        (other if _reads_text(run.model) else text).append(run.path.relative_to(root).as_posix())
    return text, other


def _runs_line(runs_dir: Path) -> str:
    text, other = served_runs(runs_dir)
    shown = ", ".join(text[:10]) + (", ..." if len(text) > 10 else "") if text else "none yet"
    return f"text runs: {shown}" + (f"; not served here (images): {', '.join(other[:10])}" if other else "")


@dataclass(frozen=True)
class Target:
    model: str  # what Predictor.load takes: the run's folder or the Hub id
    revision: str | None
    name: str  # what clients call it: the run's name (never the server's folders) or the Hub id


def _refuse_non_text(model_dir: Path, name: str) -> None:
    kind = _reads_text(model_dir)
    if kind:  # before loading it: an image run's weights would be read only to be refused
        raise ApiError(422, f"model: '{name}' is {kind}; this endpoint classifies text")


def resolve(runs_dir: Path, name: str, settings: Settings) -> Target:
    """The model a `{model}` names: a finished text run, or a Hub id the endpoint may load; 404 otherwise (422 for
    a run of another kind)."""
    name = (name or "").strip().strip("/")
    if not name:
        raise ApiError(404, f"model: missing; POST /models/<name> with a run's name ({_runs_line(runs_dir)}) or an "
                            "allowed Hub id")
    parts = name.split("/")
    # a run name is a plain relative name: nothing that climbs out of the runs folder or reads hidden entries
    if len(parts) <= RUN_DEPTH and all(p and not p.startswith(".") and "\\" not in p for p in parts):
        path = Path(runs_dir) / name
        if is_run(path) and RunDir(path).is_finished():
            _refuse_non_text(RunDir(path).model, name)
            return Target(str(path), None, name)
    if HUB_ID.match(name) and ".." not in name and ("*" in settings.allowed or name in settings.allowed
                                                   or _cached(name)):
        return Target(name, "main", name)
    raise ApiError(404, f"model: '{name}' is not a finished run in this app's runs folder ({_runs_line(runs_dir)}) "
                        "nor an allowed Hub id (HUBTUNE_API_MODELS, or a model already in the local Hub cache)")


def _cached(repo_id: str) -> bool:
    """Whether a Hub model's config is already in the local cache (someone chose it before: no new download)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id, an unreadable cache: not cached
        return False


# --- the default model -------------------------------------------------------------------------------------------
# `/predict` and `/info` take no model name, so which model answers them is fixed when the server starts: a client
# must not get another model's labels because someone finished a run meanwhile.


def newest_text_run(runs_dir: Path) -> Target | None:
    """The newest finished run that classifies text, or None."""
    text, _ = served_runs(runs_dir)
    return Target(str(Path(runs_dir) / text[0]), None, text[0]) if text else None


def _folder_target(runs_dir: Path, folder: Path) -> Target | None:
    """A finished run's folder or a model folder given by its path, named by its run name (never the server's
    folders): its path in the runs folder, else its own folder's name."""
    run = folder.parent if folder.name == "model" and is_run(folder.parent) else folder
    if is_run(run) and not RunDir(run).is_finished():
        return None
    if not (RunDir(run).model if is_run(run) else run).joinpath("config.json").is_file():
        return None
    try:
        name = run.resolve().relative_to(Path(runs_dir).resolve()).as_posix()
    except ValueError:
        name = run.resolve().name
    return Target(str(run), None, name)


def pin_default(runs_dir: Path, settings: Settings) -> tuple[Target | None, str]:
    """(what `/predict` and `/info` serve, why): HUBTUNE_API_DEFAULT_MODEL -- a run name, a run or model folder, or
    an allowed Hub id -- else the newest finished text run now (None while there is none). A setting that names
    nothing the endpoint can serve is a ConfigError: the server must not start serving something else."""
    from engine.errors import ConfigError

    value = settings.default_model
    if not value:
        newest = newest_text_run(runs_dir)
        return newest, ("the newest finished text run when the server started" if newest else
                        "none yet: the first finished text run a request finds")
    target = None
    try:
        target = resolve(runs_dir, value, settings)
    except ApiError as e:
        if e.status == 422:  # a finished run of another kind: said below, in the setting's words
            target = Target(str(Path(runs_dir) / value.strip("/")), None, value.strip("/"))
    if target is None and Path(value).expanduser().is_dir():
        target = _folder_target(runs_dir, Path(value).expanduser())
    if target is None:
        raise ConfigError(f"HUBTUNE_API_DEFAULT_MODEL: '{value}' is not a finished run in {runs_dir} "
                          f"({_runs_line(runs_dir)}), a finished run's or model's folder, nor an allowed Hub id "
                          "(HUBTUNE_API_MODELS, or the local Hub cache); set it to one, or unset it to serve the "
                          "newest finished text run")
    if target.revision is None:
        kind = _reads_text(RunDir(target.model).model if is_run(target.model) else Path(target.model))
        if kind:
            raise ConfigError(f"HUBTUNE_API_DEFAULT_MODEL: '{value}' is {kind}; the REST endpoint classifies "
                              "text: name a text run")
    return target, "HUBTUNE_API_DEFAULT_MODEL"


def check_default(target: Target) -> None:
    """Refuse (404) when the pinned default is no longer servable: its run was removed or is being trained again."""
    if target.revision is not None:
        return  # a Hub id: the cache holds it
    folder = Path(target.model)
    ok = RunDir(folder).is_finished() if is_run(folder) else (folder / "config.json").is_file()
    if not ok:
        raise ApiError(404, f"model: the default model '{target.name}' (pinned until the server restarts) is not a "
                            "finished run now (removed, or training again); wait for it to finish, or restart the "
                            "server (HUBTUNE_API_DEFAULT_MODEL chooses another)")


# --- answers -----------------------------------------------------------------------------------------------------


def _apply(row, function: str | None):
    import numpy as np

    row = np.asarray(row, dtype=np.float64).reshape(-1)
    if function == "softmax":
        e = np.exp(row - row.max())
        return e / e.sum()
    if function == "sigmoid":
        return 1 / (1 + np.exp(-row))
    return row  # the head's scores, or the logits for "none"


def label_scores(lm, row, request: Request, logits: bool) -> list[dict]:
    """One text's answer: {"label", "score"} per label, best first, top_k of them."""
    values = _apply(row, request.function if logits else None)
    pairs = sorted(zip(lm.labels, map(float, values)), key=lambda p: -p[1])
    return [{"label": label, "score": score} for label, score in pairs[:request.top_k or None]]


def inference_api_answer(lm, rows: list, request: Request, logits: bool) -> list:
    """The Inference API's answer: one list per text (also for a single string)."""
    return [label_scores(lm, row, request, logits) for row in rows]


def tei_answer(lm, rows: list, request: Request, logits: bool) -> list:
    """TEI's answer: one list for a single string, one list per text for a list."""
    answer = [label_scores(lm, row, request, logits) for row in rows]
    return answer[0] if request.single else answer


def info(lm, target: Target, precision: str, settings: Settings) -> dict:
    """`GET /info`: text-embeddings-inference's fields (model_id, model_sha, model_dtype, model_type,
    max_input_length, max_client_batch_size) and hubtune's (labels, precision, max_length, revision, task, head)."""
    head = lm.head
    chosen = lm.auto if precision == "auto" and lm.auto else precision
    commit = lm.path.name if re.fullmatch(r"[0-9a-f]{40}", lm.path.name) else None  # a Hub snapshot's folder
    out = {"model_id": target.name, "model_sha": commit, "model_dtype": chosen,
           "model_type": {"classifier": {"id2label": dict(enumerate(lm.labels)),
                                         "label2id": {label: i for i, label in enumerate(lm.labels)}}},
           "max_input_length": lm.max_length, "max_client_batch_size": settings.max_inputs,
           # the target's, not the cached model's: whoever loaded it first may have named a run with a revision
           "revision": commit or target.revision, "labels": list(lm.labels), "precision": chosen,
           "precision_setting": precision, "max_length": lm.max_length, "task": lm.task,
           "problem_type": head.problem_type, "scores": HEAD_FUNCTION.get(head.problem_type, "head"),
           "backend": lm.backend}
    thresholds = getattr(head, "saved_settings", lambda: {})()
    if thresholds:
        out["head_settings"] = thresholds  # multi-label thresholds, regression's training range
    return out
