"""Hyperparameter search with Optuna: every trial a normal run, started through the job runner.

study.py plans and runs a search (`python -m engine.search`); config.py reads the `search:` block; trials.py runs
one trial and settles interrupted ones; report.py writes the trials table, best.yaml and the plots; jobs.py starts
and follows a search in the background for the web app.

May import every other engine layer; never ui.
"""
