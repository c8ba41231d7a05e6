"""Serving: predictions from a saved model, for the shell, the web app, the REST endpoint and scripts.

predictor.py loads models once (a bounded, shared cache) and predicts in length-sorted batches, `python -m
engine.predict`; files.py streams a CSV/JSONL/parquet file through it; batcher.py gathers concurrent web requests
into batches; endpoint.py is what the REST endpoint serves and speaks (settings, models, request and answer
formats), rest.py its HTTP routes; onnx_backend.py runs an exported graph with onnxruntime, export.py writes and
verifies that graph (`python -m engine.export`); explain.py runs a task's Integrated Gradients explanation and
says what it costs.

May import the core and engine.tasks (which owns each kind of input's preprocessing, outputs and explanation);
never engine.hub, engine.training, engine.runs, engine.search or ui.
"""
