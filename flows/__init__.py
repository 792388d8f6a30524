"""Prefect flows: one per procedure; they compose tasks and do no I/O of their own."""
