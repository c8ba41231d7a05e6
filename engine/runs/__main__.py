"""`python -m engine.runs [RUNS_DIR] [--finished] [--json]`: the runs of a runs folder (engine/runs/listing.py)."""

import sys

from engine.runs.listing import main

sys.exit(main())
