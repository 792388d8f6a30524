"""Deployment helpers: one-machine `serve`, the deploy script, the CI workflow."""
