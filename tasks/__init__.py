"""Prefect tasks: thin, one side effect each; timeouts declared here, retries from the settings
(tasks.common.retrying; stages that must not run twice, such as a restore, are not retried)."""
