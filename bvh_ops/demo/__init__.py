"""The demo: the sample lottery database, its workload and the end-to-end walk through backups, PITR and drills."""
