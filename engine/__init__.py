"""hubtune's engine, grouped by concern. Imports point down this list only (tests/test_structure.py keeps it):

    core       errors, config/, data, modeling, hardware, metrics, bundled, rundir (the modules directly in engine/),
               with tasks/heads/ (what a model's outputs mean) and hub/client.py (the Hub transport)
    tasks/     one module per pipeline tag behind one registry: everything that differs between kinds of input
    serving/   prediction: the Predictor, files, batching, the REST endpoint, ONNX, explanations
    hub/       push and pull runs, the model card and its plots, the Space
    training/  one run: the Accelerate loop in stages, checkpoints, evaluation, pre-flight, launch and its checks
    runs/      what people do with many runs: the job runner, processes, listing, leaderboard, comparison
    search/    hyperparameter search with Optuna, each trial a run started through the job runner
    commands   train.py, predict.py, export.py, leaderboard.py, launch.py (and hub/, runs/, search/ __main__.py):
               the public `python -m engine.X` entry points, each a few lines that call into its package

A module may import its own layer and the ones above it in this list, never one below; ui/ and app.py sit under all
of it. Nothing in engine/ imports gradio.
"""
