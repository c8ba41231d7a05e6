"""Image models trained from scratch: the built-in `mlp`, a small `vit-tiny`, and bring-your-own `pkg.mod:Class`.

`model_name_or_path` picks them:

- `mlp`: 784 -> 256 -> 10 with ReLU for MNIST (input size and label count follow the data).
- `vit-tiny`: a 4-layer, 64-wide vision transformer (transformers' ViT) built from a config, no download.
- `my_pkg.models:Net`: any `torch.nn.Module` subclass importable from the current directory or sys.path. Its
  constructor may take any of `num_labels`, `num_channels`, `image_size` (passed by name when it accepts them);
  `forward(pixel_values)` gets a float batch (N, C, H, W) and returns logits (N, num_labels) (or an object with
  `.logits`). It may use its own `torch.autograd.Function` ops. Importing user code is allowed on the command line
  only (`engine.train`, `engine.predict`); the web app refuses it (`is_user_module`).

`mlp` and user modules are saved as `model.safetensors` plus a `config.json` that rebuilds them: architectures
`Hubtune...ForImageClassification` (so `engine.predict.model_task` says image-classification), `id2label`,
`label2id`, `hubtune_module` ("builtin:mlp" or "pkg.mod:Class"), `hubtune_kwargs`, `image_size`, `num_channels`;
the image preprocessing sits beside it in `preprocessor_config.json` (loadable with `AutoImageProcessor`).
`vit-tiny` is a plain transformers ViT and is saved with `save_pretrained`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

from engine.errors import ConfigError
from engine.modeling import PlainConfig, from_pretrained, is_plain_model, read_json_config

BUILTIN_MLP = "mlp"
BUILTIN_VIT = "vit-tiny"
BUILTINS = (BUILTIN_MLP, BUILTIN_VIT)
MODEL_TYPE = "hubtune-image"
_USER_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
# constructor arguments a user module may accept; any it declares are passed by name
CTOR_ARGS = ("num_labels", "num_channels", "image_size")


class UserCodeError(ConfigError):
    """A `pkg.mod:Class` model that cannot be used (or may not be, here), explained in one line."""


def is_user_module(name: str | None) -> bool:
    """True for a `pkg.module:Class` model name: loading it runs the user's Python code (CLI only)."""
    return bool(name) and bool(_USER_MODULE.match(str(name).strip()))


def is_from_scratch(name: str | None) -> bool:
    """True for models built here rather than loaded: `mlp`, `vit-tiny` or a `pkg.mod:Class` module."""
    name = (name or "").strip()
    return name in BUILTINS or is_user_module(name)


def refuse_user_code(name: str, field: str = "model_name_or_path") -> None:
    """The web app's refusal of `pkg.mod:Class` models, as one error line."""
    raise UserCodeError(f"{field}: '{name}' is Python code (module:Class); loading user code is allowed only from "
                        "the command line (python -m engine.train / engine.predict); pick mlp, vit-tiny or a "
                        "Hugging Face model here")


def refuse_in_web_app(name_or_path: str | None, field: str = "model_name_or_path") -> None:
    """For the web app's job runner: refuse a `pkg.mod:Class` model, or a saved model that needs one to rebuild."""
    name = (name_or_path or "").strip()
    if is_user_module(name):
        refuse_user_code(name, field)
    path = Path(name).expanduser()
    for folder in (path, path / "model"):
        if folder.is_dir() and needs_user_code(folder):
            refuse_user_code(needs_user_code(folder), field)


def import_user_class(spec: str, field: str = "model_name_or_path"):
    """The nn.Module subclass named by `pkg.mod:Class`, imported from the current directory or sys.path."""
    import torch

    module_name, _, class_name = spec.strip().partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # `examples.custom_module:Net` works from the project folder, as the docs promise
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ImportError, SyntaxError, anything the module raises on import
        raise UserCodeError(f"{field}: cannot import module '{module_name}' of '{spec}' ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); it must be importable from the current "
                            "directory or sys.path") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UserCodeError(f"{field}: module '{module_name}' has no class '{class_name}'; check the name after "
                            "the colon")
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise UserCodeError(f"{field}: '{spec}' is not a torch.nn.Module subclass; name a class that derives from "
                            "nn.Module")
    return cls


def _mlp_class():
    import torch.nn as nn

    class HubtuneMLP(nn.Module):
        """The classic MNIST MLP: flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, num_labels)."""

        def __init__(self, num_labels: int, num_channels: int, image_size: int, hidden: int = 256):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(num_channels * image_size * image_size, hidden),
                                     nn.ReLU(), nn.Linear(hidden, num_labels))

        def forward(self, pixel_values):
            return self.net(pixel_values)

    return HubtuneMLP


def _wrapper_class():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from transformers.modeling_outputs import ImageClassifierOutput

    class HubtuneImageClassifier(nn.Module):
        """Gives any logits module the interface of the training loop and Predictor: `model(pixel_values, labels)`
        -> `.loss`/`.logits`, a `.config`, and `save_pretrained` (safetensors + a config.json that rebuilds it)."""

        def __init__(self, net: nn.Module, config: dict):
            super().__init__()
            self.net, self.config = net, HubtuneConfig(config)

        def forward(self, pixel_values, labels=None, **_):
            out = self.net(pixel_values)
            logits = getattr(out, "logits", out)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ConfigError(f"model_name_or_path: {self.config.hubtune_module}.forward must return logits of "
                                  f"shape (batch, num_labels), got {type(logits).__name__} "
                                  f"{tuple(getattr(logits, 'shape', ()))}")
            loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
            return ImageClassifierOutput(loss=loss, logits=logits)

        def save_pretrained(self, path, safe_serialization: bool = True, state_dict=None, **_):
            from safetensors.torch import save_model

            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            save_model(self, str(path / "model.safetensors"))
            (path / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2), encoding="utf-8")

    return HubtuneImageClassifier


HubtuneConfig = PlainConfig  # the config of a saved mlp / user-module model (engine/modeling.py)


def _config(module: str, kwargs: dict, label_names: list[str], num_channels: int, image_size: int) -> dict:
    arch = "HubtuneMLPForImageClassification" if module == f"builtin:{BUILTIN_MLP}" else \
        "HubtuneModuleForImageClassification"
    return {"architectures": [arch], "model_type": MODEL_TYPE, "hubtune_module": module, "hubtune_kwargs": kwargs,
            "id2label": {str(i): n for i, n in enumerate(label_names)},
            "label2id": {n: i for i, n in enumerate(label_names)},
            "num_channels": num_channels, "image_size": image_size}


def build(name: str, label_names: list[str], num_channels: int, image_size: int):
    """A freshly initialised model for `mlp`, `vit-tiny` or `pkg.mod:Class` (user code: the caller allowed it)."""
    name = name.strip()
    if name == BUILTIN_VIT:
        from transformers import ViTConfig, ViTForImageClassification

        # about 7x7 patches whatever the image size: 28 px -> patch 4, 224 px -> 32; 8 px -> patch 2 (4x4)
        patch = max(2, image_size // 7)
        config = ViTConfig(image_size=image_size, patch_size=patch, num_channels=num_channels, hidden_size=64,
                           num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                           id2label=dict(enumerate(label_names)),
                           label2id={n: i for i, n in enumerate(label_names)})
        return ViTForImageClassification(config)
    sizes = {"num_labels": len(label_names), "num_channels": num_channels, "image_size": image_size}
    if name == BUILTIN_MLP:
        net, module, kwargs = _mlp_class()(**sizes), f"builtin:{BUILTIN_MLP}", {}
    else:
        net, kwargs = _instantiate(import_user_class(name), sizes, {}, name)
        module = name
    return _wrapper_class()(net, _config(module, kwargs, label_names, num_channels, image_size))


def _instantiate(cls, sizes: dict, extra: dict, name: str):
    """(instance, the size arguments it took): sizes passed by name only where the constructor accepts them."""
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in sizes.items() if k in params or takes_any}
    try:
        return cls(**kwargs, **extra), {}
    except Exception as e:  # noqa: BLE001 - the user's constructor may raise anything
        raise UserCodeError(f"model_name_or_path: {name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) "
                            f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); its "
                            f"constructor may take {', '.join(CTOR_ARGS)} (given the data's values) and must "
                            "need nothing else") from None


def is_custom_dir(path: Path) -> bool:
    """True for a saved `mlp` / user-module model (config.json with a `hubtune_module`)."""
    return is_plain_model(path)


def read_config(path: Path) -> PlainConfig:
    """The config of a saved `mlp` / user-module model."""
    return PlainConfig(read_json_config(path))


def needs_user_code(path: Path) -> str | None:
    """The `pkg.mod:Class` a saved model needs to be rebuilt, or None when it is built in / a transformers model."""
    if not is_custom_dir(path):
        return None
    module = read_config(path).hubtune_module
    return None if str(module).startswith("builtin:") else str(module)


def load(path: Path, allow_user_code: bool, field: str = "model"):
    """Rebuild a saved `mlp` / user-module model and load its safetensors weights (user code only if allowed)."""
    from safetensors.torch import load_model

    config = read_config(path)
    user = needs_user_code(path)
    if user and not allow_user_code:
        refuse_user_code(user, field)
    sizes = {"num_labels": config.num_labels, "num_channels": config.num_channels, "image_size": config.image_size}
    if not user:
        net = _mlp_class()(**sizes)
    else:
        net, _ = _instantiate(import_user_class(user, field), sizes, config.hubtune_kwargs or {}, user)
    model = _wrapper_class()(net, config.to_dict())
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{field}: '{path}' has no model.safetensors; it is not a finished hubtune image model")
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{field}: weights in '{weights}' do not fit {config.hubtune_module} (missing "
                          f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}); was the class changed?")
    return model


# ------------------------------------------------------------------------------------------------------------
# any image classifier: built here, a saved hubtune model, or a transformers one (local or Hub)


def load_for_training(source, label_names: list[str], processor, head=None):
    """A trainable image classifier for `label_names`: built from scratch (`mlp`, `vit-tiny`, `pkg.mod:Class`,
    sized by the processor), a saved hubtune model (same labels), or a transformers model re-headed if needed."""
    from engine.tasks.image_classification.inputs import processor_channels, processor_size

    if isinstance(source, str) and is_from_scratch(source):
        return build(source, label_names, processor_channels(processor), processor_size(processor))
    path = Path(source)
    if is_custom_dir(path):
        model = load(path, allow_user_code=True, field="model_name_or_path")
        old = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        if old != list(label_names):
            raise ConfigError(f"model_name_or_path: '{path}' was trained on labels {old[:10]}, the data has "
                              f"{list(label_names)[:10]}; continue training only on the same labels, or start from "
                              f"'{model.config.hubtune_module.removeprefix('builtin:')}'")
        return model
    from transformers import AutoConfig, AutoModelForImageClassification

    from engine.tasks import heads

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    old = getattr(config, "id2label", None) or {}
    relabel = [old.get(i) for i in range(len(old))] != list(label_names)
    (head or heads.SINGLE_LABEL).configure(config, list(label_names))
    try:
        return from_pretrained(AutoModelForImageClassification, path, config=config, use_safetensors=True,
                               trust_remote_code=False, ignore_mismatched_sizes=relabel)
    except ValueError as e:
        raise ConfigError(f"model_name_or_path: '{path}' is not an image classification architecture "
                          f"({str(e).splitlines()[0][:160]}); use mlp, vit-tiny or e.g. a ViT/ConvNeXt/ResNet "
                          "checkpoint") from None


def load_for_inference(path: Path, allow_user_code: bool = False):
    """(model in eval mode, image processor) for a saved image classifier; user-module models only if allowed."""
    from engine.tasks.image_classification.inputs import load_processor

    if is_custom_dir(path):
        model = load(path, allow_user_code)
    else:
        from transformers import AutoModelForImageClassification

        model = from_pretrained(AutoModelForImageClassification, path, use_safetensors=True, trust_remote_code=False)
    return model.eval(), load_processor(path, model.config)


def is_image_model_dir(path: Path) -> bool:
    """True when a local model folder holds an image classifier (hubtune's or a transformers one)."""
    return is_image_config(read_json_config(path))


def is_image_config(config: dict) -> bool:
    """True for the config.json of an image classifier (hubtune's own or a transformers one)."""
    archs = config.get("architectures") or []
    return "hubtune_module" in config or any(a.endswith("ForImageClassification") for a in archs) or \
        (not archs and "num_channels" in config and "image_size" in config)


def load_config_any(path: Path):
    """The config of a saved image model: hubtune's own, or a transformers config (no remote code)."""
    if is_custom_dir(path):
        return read_config(path)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, trust_remote_code=False)


# ------------------------------------------------------------------------------------------------------------
# the loop's and the Predictor's view of an image model


def training_parts(cfg, source, splits, parts: dict, processor):
    """(model, collator, {split: dataset}) for the training loop: images converted to the model's channels,
    training images shifted at random when `cfg.augment` (engine.train hands the batch sampler in as `epoch_of`)."""
    from engine.tasks.image_classification.inputs import ImageView, collate, processor_channels

    model = load_for_training(source, splits.label_names, processor, splits.head)
    channels = int(getattr(model.config, "num_channels", 0) or processor_channels(processor))
    views = {name: ImageView(ds, processor, channels, augment=cfg.augment and name == "train", seed=cfg.seed)
             for name, ds in parts.items()}
    return model, collate, views


def load_image_model(name: str, revision, path, device: str | None, allow_user_code: bool, bf16):
    """A LoadedModel for an image classifier (its image processor as the processor)."""
    import torch

    from engine.tasks import heads
    from engine.tasks.base import LoadedModel, model_bytes

    model, processor = load_for_inference(Path(path), allow_user_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    id2label = model.config.id2label
    labels = [str(id2label[i]) for i in range(len(id2label))]
    return LoadedModel(name, revision, Path(path), model, processor, labels, 0, 0, "image-classification", device,
                       bf16(device), model_bytes(model), user_code=needs_user_code(Path(path)),
                       head=heads.for_config(model.config))


def input_channels(lm) -> int:
    """The channels a loaded image model reads (its config's, else its processor's)."""
    from engine.tasks.image_classification.inputs import processor_channels

    return int(getattr(lm.model.config, "num_channels", 0) or processor_channels(lm.processor))


def image_scores(lm, images: list):
    """One score row (numpy) per image, in fp32 (single images: bf16 would save nothing worth a flip)."""
    import torch

    from engine.tasks.image_classification.inputs import pixel_values

    batch = pixel_values(images, lm.processor, input_channels(lm)).to(lm.device)
    with torch.inference_mode():
        return lm.head.scores(lm.model(pixel_values=batch).logits).cpu().numpy()
