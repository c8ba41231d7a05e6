"""The Hugging Face Space that serves this app: its README (YAML header) and `python -m space.publish`."""
