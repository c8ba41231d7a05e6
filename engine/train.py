"""`python -m engine.train --config run.yaml` and `accelerate launch -m engine.train ...`: one training run
(engine/training/run.py). It leaves through `exit_now`, without the interpreter's teardown, once the run is on disk."""

from engine.training.run import exit_now, main

if __name__ == "__main__":
    exit_now(main())
