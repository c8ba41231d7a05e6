"""The REST endpoint, served by the web app's own server (app.py hands these routes and refusals to Gradio's FastAPI
app):

    POST /models/{model}   Hugging Face Inference API, text classification (InferenceClient(base_url=URL/models/x))
    POST /predict          text-embeddings-inference's predict, on the default model (pinned at start-up)
    GET  /info             the default model (or ?model=NAME): id, revision, labels, precision, max length
    GET  /health           200 {"status": "ok"} while the server serves (no token needed, loads nothing)

Formats, models and settings: engine/serving/endpoint.py. Every refusal is JSON `{"error": "one line"}` with a 4xx
status (bad JSON 400, missing or wrong token 401, unknown model or path 404, wrong method 405, too big 413, bad inputs
422); an unexpected failure is a 500 with the same shape, its traceback in the server's log only, and the server keeps
serving. A path no route answers gets that shape too, except under the paths the app leaves to Gradio (/gradio_api:
its clients read Gradio's own `{"detail"}`). The token is compared in constant time and never logged.

`/predict` and `/info` serve the default model pinned when the server starts (endpoint.pin_default): a run finished
later does not change what an existing client gets. Every answer of a model names it in the X-Hubtune-Model header
(the run's name or Hub id, percent-encoded), refusals too once the model is known.

Requests are handled on the server's event loop: the body is read with its size capped, the model is loaded in a worker
thread (once, in the Predictor's cache shared with the Prediction tab), and the texts go to the micro-batcher
(engine/serving/batcher.py), which runs them with other requests' texts for the same model in one Predictor call. None
of it goes through Gradio's queue, so the training and Hub events' queue limits never hold a REST request back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.errors import ConfigError
from engine.serving import batcher, endpoint as serving
from engine.serving.endpoint import ApiError, Settings

log = logging.getLogger("hubtune")


PATHS = ("/models", "/predict", "/info", "/health")  # the endpoint's own paths, and everything under them
ROUTES_LINE = "POST /models/<name>, POST /predict, GET /info, GET /health"
MODEL_HEADER = "X-Hubtune-Model"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _named(target) -> dict:
    # header values are latin-1: a run's name may hold any character, so it travels percent-encoded
    return {MODEL_HEADER: quote(target.name, safe="/@:+-._~")} if target is not None else {}


def _ours(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PATHS)


async def _body(request: Request, cap: int) -> bytes:
    """The request body, refused (413) as soon as it is bigger than `cap` bytes: never read whole into memory."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise ApiError(413, f"body: {int(length):,} bytes; at most {cap:,} (HUBTUNE_API_MAX_BODY_MB)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"body: over {cap:,} bytes (HUBTUNE_API_MAX_BODY_MB)")
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    """The endpoint's handlers over one runs folder and Predictor (default: the app's shared one)."""

    def __init__(self, runs_dir: Path, settings: Settings | None = None, predictor=None):
        self.runs_dir, self.settings = Path(runs_dir), settings or Settings.from_env()
        self._predictor = predictor
        # a ConfigError here (HUBTUNE_API_DEFAULT_MODEL names nothing servable) stops the app before it serves
        self.default, self.default_source = serving.pin_default(self.runs_dir, self.settings)
        self._pin_lock = threading.Lock()
        log.info(self.default_line())

    def default_line(self) -> str:
        """Which model `/predict` and `/info` serve, and why, in one line (the app prints it at start-up)."""
        return (f"REST endpoint: /predict and /info serve '{self.default.name}' ({self.default_source})"
                if self.default is not None else f"REST endpoint: no default model yet ({self.default_source})")

    @property
    def predictor(self):
        from engine.serving.predictor import shared_predictor

        return self._predictor or shared_predictor()

    def routes(self) -> list[Route]:
        return [Route("/health", self.health, methods=["GET"]), Route("/info", self.info, methods=["GET"]),
                Route("/predict", self.predict, methods=["POST"]),
                Route("/models/{model:path}", self.models, methods=["POST"]),
                Route("/models", self.models, methods=["POST"])]  # no name: refused by name, not redirected

    def server_options(self, leave: tuple[str, ...] = ()) -> dict:
        """What the server hosting the endpoint takes (FastAPI's keyword arguments): its routes, and its 404/405
        refusals in the endpoint's shape except under the `leave` paths."""
        return {"routes": self.routes(), "exception_handlers": self.exception_handlers(leave)}

    def exception_handlers(self, leave: tuple[str, ...] = ()) -> dict:
        """The server's 404 and 405 in the endpoint's shape (FastAPI's `exception_handlers`), but for paths under
        `leave` and other routes' own 404s, which keep the server's `{"detail"}`."""

        async def refuse(request: Request, exc) -> JSONResponse:
            path, status = request.url.path, exc.status_code
            unrouted = "endpoint" not in request.scope  # no route matched the path (a route's own 404 has one)
            if path.startswith(leave) or not (_ours(path) or (status == 404 and unrouted)):
                return JSONResponse({"detail": exc.detail}, status_code=status, headers=getattr(exc, "headers", None))
            if status == 405:
                allowed = (getattr(exc, "headers", None) or {}).get("Allow", "")
                # HEAD comes with GET; the set's order varies between runs
                use = " or ".join(sorted({m.strip() for m in allowed.split(",") if m.strip()} - {"HEAD"}))
                return _error(405, f"method: {request.method} is not served on {path}; use {use or 'another'} "
                                   f"(the endpoint: {ROUTES_LINE})", {"Allow": allowed} if allowed else None)
            return _error(404, f"path: no route {path}; the endpoint answers {ROUTES_LINE}")

        return {404: refuse, 405: refuse}

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> JSONResponse:
        async def handle(served: dict):
            name = request.query_params.get("model")
            target, lm = await run_in_threadpool(self._model, name, served)
            b = batcher.for_predictor(self.predictor)
            default = self.default.name if self.default is not None else None
            # what batching did so far (the load bench reads it): Predictor calls for how many requests and texts
            return {**serving.info(lm, target, self.predictor.precision, self.settings),
                    "default_model": default, "default_model_source": self.default_source,
                    "batches": {"calls": b.calls, "requests": b.requests, "texts": b.items}}

        return await self._guarded(request, handle)

    async def models(self, request: Request) -> JSONResponse:
        return await self._classify(request, serving.parse_inference_api, serving.inference_api_answer,
                                    request.path_params.get("model", ""))

    async def predict(self, request: Request) -> JSONResponse:
        return await self._classify(request, serving.parse_tei, serving.tei_answer, None)

    # --- the shared path -----------------------------------------------------------------------------------------
    async def _classify(self, request: Request, parse, answer, name: str | None) -> JSONResponse:
        async def handle(served: dict):
            if name is None:  # the default is known before the body is read: a refused body names it too
                served["target"] = await run_in_threadpool(self._default_target)
            # announced at once: a batch about to start waits (a few ms) for this request instead of leaving without it
            with batcher.for_predictor(self.predictor).arriving() as arrival:
                asked = parse(await _body(request, self.settings.max_body), self.settings)
                # file checks, maybe a first load: off the loop
                _, lm = await run_in_threadpool(self._model, name, served)
                logits = serving.wants_logits(asked, lm.head)
                rows = await asyncio.wrap_future(batcher.scores(lm, asked.texts, logits=logits,
                                                                predictor=self.predictor, arrival=arrival))
            return answer(lm, rows, asked, logits)

        return await self._guarded(request, handle)

    async def _guarded(self, request: Request, handle) -> JSONResponse:
        """Run a handler after the token check; every failure becomes a JSON error (never a traceback)."""
        served: dict = {}  # handle() puts the model's target here once known (after the token check: no leak)
        try:
            serving.check_token(self.settings, request.headers.get("authorization"))
            answer = await handle(served)
            return JSONResponse(answer, headers=_named(served.get("target")))
        except ApiError as e:
            return _error(e.status, e.message, _named(served.get("target")))
        except ConfigError as e:  # the engine's one-line errors: a model that cannot serve, an input it refuses
            return _error(422, str(e), _named(served.get("target")))
        except Exception as e:
            log.exception("REST %s %s failed", request.method, request.url.path)  # path only: no header, no token
            return _error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    def _default_target(self):
        """The pinned default; with no text run at start-up, the first one a request finds, pinned from then on."""
        with self._pin_lock:
            if self.default is None:
                self.default = serving.newest_text_run(self.runs_dir)
                if self.default is None:
                    raise ApiError(404, "model: no finished text run in this app's runs folder to serve yet; train "
                                        "one (the first to finish becomes the default until the server restarts), "
                                        "or set HUBTUNE_API_DEFAULT_MODEL")
                self.default_source = "the first finished text run after the server started"
                log.info(self.default_line())
        serving.check_default(self.default)
        return self.default

    def _model(self, name: str | None, served: dict) -> tuple:
        """(target, loaded model) for `{model}` (None: the default model), refused unless it reads text."""
        target = self._default_target() if name is None else serving.resolve(self.runs_dir, name, self.settings)
        served["target"] = target
        lm = self.predictor.load(target.model, target.revision)
        if lm.kind.input_kind != "text":
            raise ApiError(422, f"model: '{target.name}' is an {lm.task} model; this endpoint classifies text")
        return target, lm


def routes(runs_dir: Path, settings: Settings | None = None, predictor=None) -> list[Route]:
    """The endpoint's routes over `runs_dir`, with settings from the environment unless given."""
    return Api(runs_dir, settings, predictor).routes()
