"""Baton: a webhook-driven workflow orchestrator."""

__version__ = "0.1.0"
