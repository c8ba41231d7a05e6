"""The `search:` block of a run YAML (or a file of its own: `--search search.yaml`): which TrainConfig keys a
hyperparameter search varies and how, how many trials, the metric, the sampler and the pruner. Parsed and checked
here before any trial starts: every problem at once, one line each naming the key and the fix.

    search:
      params:                                              # the TrainConfig keys that vary
        learning_rate: {low: 1e-5, high: 3e-4, log: true}  # a range: float, or int for integer keys (step: ...)
        num_train_epochs: [1, 2, 3]                        # a list: one of these values
        per_device_train_batch_size: [16, 32]
      n_trials: 8          # trials that finish (done, pruned or failed); one interrupted by a stop is tried again
      timeout: 3600        # seconds of one invocation: no trial starts after it (the running one finishes)
      metric: accuracy     # default: the run's metric_for_best_model (auto: the head's); every trial keeps its
                           # best checkpoint by it
      direction: maximize  # default: the metric's own (loss, rmse, mae, ...: minimize)
      sampler: tpe         # or random; {type: tpe, n_startup_trials: 4}; seeded from the config's seed
      pruner: median       # or percentile, hyperband, successive_halving, none; {type: median, n_startup_trials: 2}
      enqueue:             # trials to try first, e.g. the settings used today
        - {learning_rate: 5e-5}

Samplers and pruners are Optuna's; their options are checked against the class's own parameters.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import typing
from dataclasses import dataclass, field

from engine.config import TrainConfig
from engine.errors import ConfigError

KEYS = ("params", "n_trials", "timeout", "metric", "direction", "sampler", "pruner", "enqueue")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner"}
# keys a search may not vary, and why: they name where a trial goes or what it is measured on
NOT_SEARCHED = {
    **dict.fromkeys(("output_dir", "overwrite_output_dir", "resume_from_checkpoint"),
                    "each trial gets its own folder (<search>/trial-N)"),
    **dict.fromkeys(("dataset_name", "dataset_config_name", "dataset_revision", "train_file", "validation_file",
                     "test_file", "train_split", "validation_split", "test_split", "validation_split_percentage",
                     "max_eval_samples", "text_column", "text_pair_column", "label_column", "image_column",
                     "problem_type", "label_separator"),
                    "trials are compared on the same data; set it outside the search block"),
    "metric_for_best_model": "it is the search's own metric; set search.metric instead",
    **dict.fromkeys(("push_to_hub", "hub_model_id", "hub_private_repo", "hub_push_checkpoints"),
                    "push the best trial once the search is done (python -m engine.hub push runs/<search>/trial-N)"),
}
RANGE_KEYS = ("low", "high", "log", "step")


@dataclass
class Param:
    """One varied key: a float or int range (low..high, log scale, step) or a list of choices."""

    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial):
        """This key's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_yaml(self):
        if self.kind == "categorical":
            return list(self.choices)
        out = {"low": self.low, "high": self.high}
        return {**out, **({"log": True} if self.log else {}), **({"step": self.step} if self.step else {})}

    def contains(self, value) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass
class SearchConfig:
    """A parsed, checked search block."""

    params: dict[str, Param]
    n_trials: int = 10
    timeout: float | None = None
    metric: str | None = None  # None: the run's metric_for_best_model, resolved by its head
    direction: str | None = None  # None: the metric's own
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict = field(default_factory=dict)
    enqueue: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The block as YAML writes it (the search folder's search.yaml), parsed back by `parse`."""
        return {"params": {n: p.to_yaml() for n, p in self.params.items()}, "n_trials": self.n_trials,
                "timeout": self.timeout, "metric": self.metric, "direction": self.direction,
                "sampler": {"type": self.sampler, **self.sampler_options},
                "pruner": {"type": self.pruner, **self.pruner_options}, "enqueue": self.enqueue}

    def build_sampler(self, seed: int):
        """The Optuna sampler, seeded from the run's seed unless the block gives one."""
        import optuna

        return getattr(optuna.samplers, SAMPLERS[self.sampler])(**{"seed": seed, **self.sampler_options})

    def build_pruner(self):
        import optuna

        return getattr(optuna.pruners, PRUNERS[self.pruner])(**self.pruner_options)


def _number(value):
    """A YAML number; also '1e-5', which YAML 1.1 (PyYAML) reads as text without a dot in the mantissa."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _closest(name: str, names) -> str:
    near = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _field_kind(name: str) -> str:
    """float, int, bool or str (Literal and Optional unwrapped) of a TrainConfig field."""
    tp = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    if tp in (int, float, bool):
        return tp.__name__
    return "list" if typing.get_origin(tp) is list else "str"


def parse(block, base: TrainConfig) -> SearchConfig:
    """The search block checked against the run's base config; ConfigError listing every problem."""
    problems: list[str] = []
    if not isinstance(block, dict) or not block:
        raise ConfigError("search: no search block; add search: with params: (e.g. learning_rate: {low: 1e-5, "
                          "high: 3e-4, log: true}) to the run YAML, or pass --search search.yaml")
    problems += [f"search: unknown key '{k}'{_closest(k, KEYS)}; use {', '.join(KEYS)}" for k in block if k not in KEYS]
    params = _params(block.get("params"), base, problems)
    spec = SearchConfig(params=params)
    spec.n_trials = _n_trials(block.get("n_trials", spec.n_trials), problems)
    timeout = block.get("timeout")
    if timeout is not None and not ((_number(timeout) or 0) > 0):
        problems.append(f"search.timeout: must be a number of seconds > 0, got {timeout!r}; or remove it")
    spec.timeout = None if timeout is None else _number(timeout)
    spec.metric, spec.direction = _metric(block.get("metric"), block.get("direction"), problems)
    spec.sampler, spec.sampler_options = _algorithm("sampler", block.get("sampler") or "tpe", SAMPLERS, problems)
    spec.pruner, spec.pruner_options = _algorithm("pruner", block.get("pruner") or "median", PRUNERS, problems)
    spec.enqueue = _enqueue(block.get("enqueue") or [], params, problems)
    if problems:
        raise ConfigError(problems)
    return spec


def _n_trials(value, problems: list[str]) -> int:
    n = _number(value)
    if n is None or n != int(n) or n < 1:
        problems.append(f"search.n_trials: must be a whole number >= 1, got {value!r}")
        return 1
    return int(n)


def _params(raw, base: TrainConfig, problems: list[str]) -> dict[str, Param]:
    if not isinstance(raw, dict) or not raw:
        problems.append("search.params: no keys to vary; add e.g. learning_rate: {low: 1e-5, high: 3e-4, log: true}")
        return {}
    names, out = TrainConfig.field_names(), {}
    for name, spec in raw.items():
        where = f"search.params.{name}"
        if name not in names:
            problems.append(f"{where}: unknown key '{name}'{_closest(name, names)}; vary TrainConfig keys only")
        elif name in NOT_SEARCHED:
            problems.append(f"{where}: cannot be searched: {NOT_SEARCHED[name]}")
        elif (param := _param(name, spec, where, problems)) is not None:
            problems += _value_problems(param, base, where)
            out[name] = param
    return out


def _param(name: str, spec, where: str, problems: list[str]) -> Param | None:
    kind = _field_kind(name)
    if isinstance(spec, list):
        if not spec:
            problems.append(f"{where}: empty list; give at least one value, e.g. [16, 32]")
            return None
        if any(isinstance(v, (list, dict)) or v is None for v in spec):
            problems.append(f"{where}: each choice must be one value (a number, text or true/false)")
            return None
        choices = [_number(v) if kind in ("int", "float") and _number(v) is not None else v for v in spec]
        choices = [int(v) if kind == "int" and isinstance(v, float) and v.is_integer() else v for v in choices]
        return Param(name, "categorical", choices=tuple(dict.fromkeys(choices)))
    if not isinstance(spec, dict):
        problems.append(f"{where}: give a range {{low: ..., high: ...}} or a list of choices, got {spec!r}; a fixed "
                        "value goes outside the search block")
        return None
    if kind not in ("int", "float"):
        problems.append(f"{where}: a {kind} key takes a list of choices, not a range")
        return None
    bad = [k for k in spec if k not in RANGE_KEYS]
    low, high, step = _number(spec.get("low")), _number(spec.get("high")), spec.get("step")
    if bad:
        problems.append(f"{where}: unknown range key '{bad[0]}'; a range takes {', '.join(RANGE_KEYS)}")
    elif low is None or high is None:
        problems.append(f"{where}: a range needs numbers low and high, e.g. {{low: 1e-5, high: 3e-4}}")
    elif low >= high:
        problems.append(f"{where}: empty range: low {low:g} >= high {high:g}; give low < high")
    elif kind == "int" and (low != int(low) or high != int(high)):
        problems.append(f"{where}: {name} is a whole number; give whole low and high")
    elif spec.get("log") and low <= 0:
        problems.append(f"{where}: a log range needs low > 0, got {low:g}")
    elif step is not None and (_number(step) is None or _number(step) <= 0 or spec.get("log")):
        problems.append(f"{where}: step must be a number > 0 and cannot go with log: true")
    else:
        if kind == "int":
            low, high = int(low), int(high)
        step = None if step is None else (int(_number(step)) if kind == "int" else float(_number(step)))
        return Param(name, kind, low=low if kind == "int" else float(low), high=high if kind == "int" else float(high),
                     log=bool(spec.get("log")), step=step)
    return None


def _values(param: Param) -> list[tuple[str, object]]:
    """(what, value) pairs a search may try at the edges: each choice, or a range's two ends."""
    if param.kind == "categorical":
        return [(f"choice {v!r}", v) for v in param.choices]
    return [(f"low {param.low:g}", param.low), (f"high {param.high:g}", param.high)]


def _value_problems(param: Param, base: TrainConfig, where: str) -> list[str]:
    """What the trainer would refuse in a trial taking one of the param's edge values (its own checks and
    messages), beyond what it already refuses in the base config."""
    def problems(values: dict) -> list[str]:
        try:
            TrainConfig.from_dict(values, source=where).validate(check_paths=False)
        except ConfigError as e:
            return e.problems
        return []

    base_values = {k: v for k, v in base.to_dict().items() if v is not None}
    known = set(problems(base_values))
    out = []
    for what, value in _values(param):
        out += [f"{where}: {what} is refused ({p})" for p in problems({**base_values, param.name: value})
                if p not in known]
    return out


def _metric(metric, direction, problems: list[str]) -> tuple[str | None, str | None]:
    from engine.tasks.heads import HEADS

    known = sorted({m for h in HEADS.values() for m in h.metrics_names})
    name = None if metric in (None, "", "auto") else str(metric).removeprefix("eval_")
    if name is not None and name not in known:
        problems.append(f"search.metric: unknown metric '{metric}'{_closest(name, known)}; use auto or one of "
                        f"{', '.join(known)}")
    if direction not in (None, "", "maximize", "minimize"):
        problems.append(f"search.direction: '{direction}' is not maximize or minimize; or remove it (the metric's "
                        "own direction)")
    return name, direction or None


def _algorithm(what: str, raw, known: dict, problems: list[str]) -> tuple[str, dict]:
    """A sampler or pruner: a name, or {type: name, option: value, ...}, its options checked against the Optuna
    class and built once to catch bad values."""
    import optuna

    options = dict(raw) if isinstance(raw, dict) else {}
    name = str(options.pop("type", "") if isinstance(raw, dict) else raw).lower()
    if name not in known:
        problems.append(f"search.{what}: unknown {what} '{name}'{_closest(name, known)}; use {', '.join(known)}")
        return name, {}
    cls = getattr(optuna.samplers if what == "sampler" else optuna.pruners, known[name])
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")]
    bad = [k for k in options if k not in accepted]
    if bad:
        problems.append(f"search.{what}: {name} has no option '{bad[0]}'{_closest(bad[0], accepted)}; it takes "
                        f"{', '.join(accepted) or 'no options'}")
        return name, {}
    try:
        cls(**copy.deepcopy(options))
    except (TypeError, ValueError) as e:
        problems.append(f"search.{what}: {name} {options}: {str(e).splitlines()[0]}")
    return name, options


def _enqueue(raw, params: dict[str, Param], problems: list[str]) -> list[dict]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append("search.enqueue: give a list of {key: value} trials, e.g. [{learning_rate: 5e-5}]")
        return []
    out = []
    for i, trial in enumerate(raw):
        values = {k: _number(v) if _number(v) is not None and params.get(k) and params[k].kind != "categorical"
                  else v for k, v in trial.items()}
        for k, v in values.items():
            if k not in params:
                problems.append(f"search.enqueue[{i}]: '{k}' is not a searched key; use {', '.join(params)}")
            elif not params[k].contains(v):
                problems.append(f"search.enqueue[{i}]: {k} {v!r} is outside its search space {params[k].to_yaml()}")
        out.append(values)
    return out


def split_block(values: dict) -> tuple[dict, dict | None]:
    """(the run's own keys, the search block) of a run YAML's mapping."""
    values = dict(values)
    return values, values.pop("search", None)

