"""What people do with many runs: start them, follow them, list, rank, compare and delete them.

jobs.py is the job runner behind the web app (one queue, each run a subprocess running exactly the command the UI
shows, reattached after a restart); processes.py finds a run's processes and the line that explains a failure;
listing.py is `python -m engine.runs`; leaderboard.py one row per run (`python -m engine.leaderboard`), compare.py
the curves and config differences of several runs. One run directory's own files and which folders are runs are
the core's engine/rundir.py.

May import every engine layer but engine.search; never ui.
"""
