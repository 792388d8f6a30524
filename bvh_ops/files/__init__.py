"""File-set snapshots (#18): configuration, secrets, certificates, assets and system settings
as content-addressed, deduplicated, encrypted snapshots in the backup repository; inspection,
diff, safe restore, verify and garbage collection. See layout.py for the repository layout."""
