"""`python -m engine.predict --model M --text ... | --image ... | --input FILE`: prediction from the shell
(engine/serving/predictor.py; --explain: engine/serving/explain.py)."""

import sys

from engine.serving.predictor import main

if __name__ == "__main__":
    sys.exit(main())
