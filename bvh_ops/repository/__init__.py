"""The backup repository: layout, signed manifests, catalog, atomic commit, verify, retention."""
