"""The HTTP API (``/api/v1``): FastAPI routes that translate requests into the same core steps as the CLI.

``app.create_app`` wires it; ``deps`` holds the per-request store, authentication and audit;
``errors`` maps AutoPatch errors to HTTP; ``models`` are the bodies; ``routes/`` one module per area.
"""
