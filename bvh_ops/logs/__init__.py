"""Logs (#13): collection by category, retention with archive-before-delete, search and analysis."""
