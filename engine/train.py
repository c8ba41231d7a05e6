"""`python -m engine.train --config run.yaml` and `accelerate launch -m engine.train ...`: one training run
(engine/training/run.py). It leaves through `exit_now`, without the interpreter's teardown, once the run is on disk."""

if __name__ == "__main__":
    import gc

    # the start-up imports torch, transformers and datasets and builds the model and data: about a million objects
    # that all stay alive, which the cyclic garbage collector would scan over and over (a fifth of a run's start-up
    # CPU, measured). It stays off until the run is set up; engine/training/run.py turns it back on.
    gc.disable()

    from engine.training.run import exit_now, main

    exit_now(main(paused_gc=True))
