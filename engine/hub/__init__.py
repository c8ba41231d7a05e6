"""The Hugging Face Hub: push a finished run as a model repo, pull any repo, publish the Space.

client.py is the transport every Hub call goes through (tokens that never leak, retries, one-line errors,
downloads); it imports only engine.errors, because model resolution in the core (engine/modeling.py) downloads
through it. push.py holds the commands (`python -m engine.hub push|pull`), card.py builds the model card from the
run directory (with the task's tag and usage snippet), plots.py draws the pictures the card and the web app show.

May import the core, engine.tasks and engine.serving (a push can include the ONNX export); never engine.training,
engine.runs, engine.search or ui. This file imports nothing, so importing hub.client stays light.
"""
