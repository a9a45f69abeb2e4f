"""Guardrails on requests (input) and responses (output): see :mod:`.stages`."""
