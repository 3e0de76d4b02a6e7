"""Runnable examples of handler apps for Baton."""
