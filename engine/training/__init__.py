"""Training: one run, from its config to a finished run directory, through an explicit Accelerate loop.

run.py is the run in named stages (prepare, set-up, fit, finish) behind `python -m engine.train`; loop.py the
prepared bundle (model, dataloaders, optimizer, schedule) and its steps; checkpoint.py what the loop keeps on disk
(checkpoints, best weights, the crash test hook, pushes); evaluation.py, distributed.py (DDP/FSDP and several
machines), perf.py (throughput, MFU); preflight.py what a run will see and cost before it starts (the web app's
Check); launch.py the accelerate command of a run and the checks before any process starts (`python -m
engine.launch`).

May import the core, engine.tasks, engine.serving and engine.hub (a run pushes itself to the Hub); never
engine.runs, engine.search or ui.
"""
