"""Monitoring: probes of the platform (HTTP endpoints with conditions), its database, cache, host
and backups, each returning check results (``results``) judged against the runbook's thresholds
(``thresholds``, pure); ``cycle.run_cycle`` runs them all once, concurrently, under a deadline.
No Prefect here: the CLI and (later) the monitoring flow drive it."""
