"""`python -m engine.search --config run.yaml [...]`: a hyperparameter search (engine/search/study.py)."""

import sys

from engine.search.study import main

sys.exit(main())
