"""Prefect flows: thin; they sequence what ``drills`` and ``verify`` provide."""
