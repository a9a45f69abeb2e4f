"""The gateway: one endpoint's OpenAI-compatible proxy.

Layout, top-down:

- ``app`` — the raw ASGI app: routes, body limits, validation, response writing.
- ``protocol`` — the OpenAI request models every route validates against.
- ``traffic`` — the weighted choice of a served entity (and the AI-gateway seam).
- ``upstream`` — all network I/O: pooled clients, token exchange, streaming.
- ``providers/`` — one module per provider: pure translation only.
- ``secrets`` — credential files, re-read when Kubernetes rotates them.
- ``tables/`` — usage rows and inference tables (PostgreSQL), off the request path.
- ``server`` — the ``modelport gateway`` command (uvicorn).
"""
