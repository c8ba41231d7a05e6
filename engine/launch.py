"""`python -m engine.launch <the arguments of accelerate launch>`: the launch checked first, then handed to
accelerate's own launcher unchanged (engine/training/launch.py)."""

import sys

from engine.training.launch import main

if __name__ == "__main__":
    sys.exit(main())
