"""`python -m engine.leaderboard [RUNS_DIR] [--sort ...] [--csv out.csv]`: the runs leaderboard
(engine/runs/leaderboard.py)."""

import sys

from engine.runs.leaderboard import main

if __name__ == "__main__":
    sys.exit(main())
