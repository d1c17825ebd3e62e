"""Serving: an OpenAI-compatible HTTP API with continuous (or dynamic) batching, and a Gradio web UI.

``create_app`` builds the FastAPI app around any engine with ``generate`` / ``stream`` (see ``engine.py``);
``vlmforge serve`` and ``vlmforge ui`` are the command-line entry points (``commands.py``).
"""
