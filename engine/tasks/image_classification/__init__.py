"""Image classification: any Hub `AutoModelForImageClassification`, small models trained from scratch (`mlp`,
`vit-tiny`) and users' own `nn.Module`s (`pkg.mod:Class`, command line only), on bundled digits, image folders and
zips, or Hub datasets with an image column.

    data.py     image sources: imagefolder folders and zips (safe), Hub image columns, samples of a finished run
    inputs.py   images -> model inputs: channels, the image processor, augmentation, drawings, batches
    models.py   from-scratch models, user modules, loading any image classifier (safetensors only)

The task claims a run whose model is built from scratch, whose data is images by name, or whose base model is an
image classifier; and a saved model whose config.json is one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from engine.errors import DataError
from engine.tasks.base import Prepared, Task, Training
from engine.tasks.image_classification import data as image_data, models


class ImageClassification(Task):
    tag = "image-classification"
    input_kind = "image"

    # --- detection ------------------------------------------------------------------------------------------
    def claims_run(self, cfg, model_path) -> bool:
        if models.is_from_scratch(cfg.model_name_or_path) or image_data.is_image_source(cfg):
            return True
        return model_path is not None and models.is_image_model_dir(model_path)

    def claims_model(self, config: dict) -> bool:
        return models.is_image_config(config)

    # --- data -----------------------------------------------------------------------------------------------
    def claims_file(self, path) -> bool:
        return Path(path).suffix.lower() in image_data.ARCHIVES

    def describe_file(self, path) -> dict:
        return {"note": image_data.describe_archive(Path(path)), "columns": None}

    def load_raw(self, cfg) -> dict:
        return image_data.load_raw(cfg)

    def standardize(self, ds, cfg, field: str):
        return image_data.standardize(ds, cfg, field)

    def prepare(self, cfg, model_path, main_process_first=contextlib.nullcontext, for_training: bool = False
                ) -> Prepared:
        """(model source, image processor, splits) for an image run; bad input raises one line. The source is the
        from-scratch name (`mlp`, `vit-tiny`, `pkg.mod:Class`) or the resolved model folder."""
        from engine.tasks.image_classification.inputs import data_shape, load_processor, make_processor

        name = cfg.model_name_or_path.strip()
        scratch = models.is_from_scratch(name)
        if scratch and models.is_user_module(name):
            models.import_user_class(name)  # a missing module or a non-Module class fails before any data work
        if not scratch and not models.is_image_model_dir(model_path):
            raise DataError(f"model_name_or_path: '{name}' is a text model and {cfg.dataset_name or cfg.train_file} "
                            "holds images; use mlp or vit-tiny (trained from scratch), my_pkg.models:Net, or an "
                            "image classifier (ViT, ConvNeXt, ResNet...)")
        with main_process_first():
            splits = self.load_splits(cfg)
        if "image" not in splits.train.column_names:
            raise DataError(f"model_name_or_path: '{name}' is an image model but the data has no image column; set "
                            "image_column, or use a text model for text data")
        if scratch:
            channels, side = data_shape(splits.train, cfg.image_size or None)
            processor, source = make_processor(side, channels), name
        else:
            processor, source = load_processor(model_path, models.load_config_any(model_path)), model_path
        parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
        return Prepared(source, processor, splits, {k: v for k, v in parts.items() if v is not None})

    # --- training -------------------------------------------------------------------------------------------
    def training(self, cfg, prepared: Prepared, device_type: str) -> Training:
        from engine.tasks.image_classification.inputs import tokens_per_image
        from engine.tasks.image_classification.models import training_parts

        model, collator, views = training_parts(cfg, prepared.source, prepared.splits, prepared.parts,
                                                prepared.processor)
        per_image = tokens_per_image(model, prepared.processor)

        def tokens(batch):  # a fixed number of tokens (patches) per image and no padding
            n = batch["labels"].shape[0] * per_image
            return n, n

        def on_epoch(sampler):  # augmentation seeded by (seed, epoch, index): exact resume
            views["train"].epoch_of = sampler

        return Training(model, collator, views, [1] * len(views["train"]), False, tokens, on_epoch)

    def after_training(self, run, prepared: Prepared, labels, scores) -> None:
        """Pictures of validation examples and mistakes, for the web app (samples/ in the run directory)."""
        image_data.save_samples(run.path / "samples", prepared.parts["validation"], labels, scores,
                                prepared.splits.label_names)

    # --- prediction -----------------------------------------------------------------------------------------
    def load_for_inference(self, name, revision, path, device, allow_user_code, bf16):
        from engine.tasks.image_classification.models import load_image_model

        return load_image_model(name, revision, path, device, allow_user_code, bf16)

    def scores(self, lm, images: list, batch_size: int = 32, precision: str = "fp32", max_length=None) -> list:
        from engine.tasks.image_classification.models import image_scores

        return list(image_scores(lm, images))

    def explain(self, lm, value, label, steps):
        """Integrated Gradients on the pixels, as a saliency overlay on the image (explain.py)."""
        from engine.tasks.image_classification.explain import explain

        return explain(lm, value, label, steps)

    def check_input(self, lm, value):
        if isinstance(value, str) and not Path(value).suffix:
            raise DataError(f"model: '{lm.name}' reads images; give it an image (--image, the Image box)")
        return value

    # --- pre-flight and model card --------------------------------------------------------------------------
    def preflight(self, cfg, prepared: Prepared) -> dict:
        from engine.tasks.image_classification.preflight import section

        return section(cfg, prepared)

    def timing(self, cfg, prepared: Prepared, section: dict):
        from engine.tasks.image_classification.preflight import timing

        return timing(cfg, prepared)

    def usage(self, usage_id: str, run, head=None) -> str:
        if models.is_custom_dir(run.model):
            # a hubtune mlp / pkg.mod:Class model: rebuilt by hubtune (user modules on the command line only)
            return f"""```bash
python -m engine.hub pull {usage_id}
python -m engine.predict --model {usage_id} --image digit.png
```"""
        return f"""```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{usage_id}")
print(classifier("digit.png"))
```"""


TASK = ImageClassification()
