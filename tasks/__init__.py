"""Prefect tasks: thin, one side effect each, retries and timeouts declared here."""
