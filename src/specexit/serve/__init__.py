"""OpenAI-compatible HTTP server for SpecExit (``specexit serve``); see docs/serving.md.

Kept import-light on purpose: ``specexit.cli`` imports :mod:`specexit.serve.cli` to register the
sub-command, and FastAPI / uvicorn are only loaded when a server is actually built.
"""
