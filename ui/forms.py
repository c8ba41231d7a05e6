"""TrainConfig field <-> Gradio component, generated from the dataclass (no hand-written widget list).

Each field's metadata (engine/config/__init__.py) gives its help text, its group and, for numbers, its range; its type
gives the widget: bool -> Checkbox, Literal -> Dropdown, bounded number -> Slider (small ranges) or Number,
str/Optional -> Textbox, list[str] -> comma-separated Textbox. Values travel back through `form_values()` and
`TrainConfig.from_dict()`, so the form gets exactly the trainer's parsing and `validate()` messages.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from engine.config import ConfigError, TrainConfig

GROUPS = ("model", "data", "training", "optimizer", "speed", "evaluation", "checkpoints", "logging", "hub", "output")
GROUP_TITLES = {"model": "Model", "data": "Data", "training": "Training", "optimizer": "Optimizer",
                "speed": "Speed", "evaluation": "Evaluation", "checkpoints": "Checkpoints", "logging": "Logging",
                "hub": "Hugging Face Hub", "output": "Output"}
OPEN_GROUPS = ("training", "optimizer")  # the knobs people change most start expanded


@dataclass
class Spec:
    """What the form needs to know about one field, derived from its type hint and metadata."""

    name: str
    kind: str  # bool | choice | int | float | str | list
    optional: bool
    default: Any
    help: str
    group: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()


def field_specs(cls=TrainConfig, exclude: typing.Iterable[str] = ()) -> list[Spec]:
    """One Spec per dataclass field (in declaration order), minus `exclude`."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        origin = typing.get_origin(tp)
        if tp is bool:
            kind, choices = "bool", ()
        elif origin is Literal:
            kind, choices = "choice", typing.get_args(tp)
        elif tp in (int, float):
            kind, choices = tp.__name__, ()
        elif origin is list:
            kind, choices = "list", ()
        else:
            kind, choices = "str", ()
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        md = f.metadata
        specs.append(Spec(f.name, kind, optional, default, md.get("help", ""), md.get("group", "training"),
                          md.get("minimum"), md.get("maximum"), choices))
    return specs


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _label(name: str) -> str:
    return name.replace("_", " ")


def component_for(spec: Spec, value: Any = None) -> gr.components.Component:
    """The Gradio component for one field; `elem_id` is `cfg-<field>` so tests and users can find it."""
    value = spec.default if value is None else value
    common = {"label": _label(spec.name), "info": spec.help, "elem_id": f"cfg-{spec.name}"}
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.kind in ("int", "float") and spec.optional:
        # gr.Number shows (and returns) 0 for None; an empty textbox keeps "not set" distinct from 0
        return gr.Textbox(value="" if value is None else str(value), placeholder="(empty = not set)", **common)
    if spec.kind in ("int", "float"):
        lo, hi = spec.minimum, spec.maximum
        small = lo is not None and hi is not None and (
            (spec.kind == "int" and hi - lo <= 100) or (spec.kind == "float" and lo == 0 and hi <= 1))  # ratios; learning rates (1e-8..1) stay Number
        if small and not spec.optional:
            return gr.Slider(minimum=lo, maximum=hi, value=value, step=1 if spec.kind == "int" else 0.01, **common)
        # no min/max on Number: gradio would refuse out-of-range values with a message that names no field;
        # validate() reports them instead ("learning_rate: must be >= 1e-08"), and the range is in the help
        if lo is not None and hi is not None:
            common["info"] = f"{spec.help} Range {lo:g} to {hi:g}."
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None,
                         step=1 if spec.kind == "int" else _float_step(spec), **common)
    if spec.kind == "list":
        return gr.Textbox(value=", ".join(value or []), placeholder="comma-separated", **common)
    return gr.Textbox(value="" if value is None else str(value), placeholder="(empty)" if spec.optional else None,
                      **common)


def _float_step(spec: Spec) -> float:
    return 1e-6 if (spec.maximum or 1) <= 1 else 0.1


def build_form(exclude: typing.Iterable[str] = (), values: dict | None = None,
               hints: dict | None = None) -> dict[str, gr.components.Component]:
    """Render every field (inside the current Blocks), one accordion per group; returns {field name: component}.
    `hints` ({field name: None}) asks for a hidden Markdown under that field's row, filled in as
    {field name: gr.Markdown} (a check's advice about the field shows there: `hint_update`)."""
    specs = field_specs(exclude=exclude)
    values = values or {}
    out: dict[str, gr.components.Component] = {}
    # groups added to the dataclass later still get an accordion, after the known ones
    for group in GROUPS + tuple(dict.fromkeys(s.group for s in specs if s.group not in GROUPS)):
        members = [s for s in specs if s.group == group]
        if not members:
            continue
        with gr.Accordion(GROUP_TITLES.get(group, group.title()), open=group in OPEN_GROUPS, elem_id=f"cfg-group-{group}"):
            for i in range(0, len(members), 2):
                with gr.Row():
                    for spec in members[i:i + 2]:
                        out[spec.name] = component_for(spec, values.get(spec.name))
                for spec in members[i:i + 2]:
                    if hints is not None and spec.name in hints:
                        hints[spec.name] = gr.Markdown(visible=False, elem_id=f"cfg-{spec.name}-hint")
    return out


def hint_update(field: str, lines: typing.Iterable[str]) -> dict:
    """The hint under `field`: the lines (a check's warnings) that propose a value for it ('field: value'),
    hidden when none does."""
    found = [line for line in lines if f"{field}:" in line]
    return gr.update(value="\n\n".join(f"⚠️ {line}" for line in found), visible=bool(found))


def form_values(names: list[str], widget_values: typing.Sequence) -> dict:
    """Widget values (in `names` order) -> plain config values: empty optional fields become None, ints ints."""
    specs = {s.name: s for s in field_specs()}
    out = {}
    for name, value in zip(names, widget_values):
        spec = specs[name]
        if isinstance(value, str):
            value = value.strip()
        if value in ("", None) and spec.kind == "list":
            out[name] = []
            continue
        if value in ("", None):
            # an emptied required field keeps None so from_dict() names it ("cannot be empty")
            out[name] = None
            continue
        if spec.kind == "list":
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        elif spec.kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[name] = value
    return out


def to_config(values: dict) -> TrainConfig:
    """Plain values -> TrainConfig, parsed like the command line (raises ConfigError)."""
    return TrainConfig.from_dict(values, source="form")


def problems(values: dict, check_paths: bool = True) -> list[str]:
    """Every problem the trainer would report for these values (same parsing, same validate()); [] if none."""
    try:
        to_config(values).validate(check_paths=check_paths)
    except ConfigError as e:
        return list(e.problems)
    return []
