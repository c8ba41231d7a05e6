"""`python -m engine.export --model runs/x [--quantize int8]`: ONNX export, verified against PyTorch
(engine/serving/export.py)."""

import sys

from engine.serving.export import main

if __name__ == "__main__":
    sys.exit(main())
