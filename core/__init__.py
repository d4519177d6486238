"""Shared parts of caption-verifier: settings, the job model, the job store, error codes.

Nothing here imports Flask, Celery or torch, and nothing does I/O at import.
"""
