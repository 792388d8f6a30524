"""Alerting (#12): rules and their state machine over the monitor's checks, routing by severity,
and the delivery channels. Not wired into the monitor yet: nothing else imports this package."""
