"""The Gradio web UI: one module per tab (predict_tab.py, ...), composed by app.py.

Importing `ui` never imports torch or loads a model: the app starts fast and models load on first use.
"""

import os

# Gradio's analytics look up outside hosts; they stay off unless the user sets GRADIO_ANALYTICS_ENABLED=True.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
