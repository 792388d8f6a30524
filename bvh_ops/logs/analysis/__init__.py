"""Log analysis (#13 item 4): detectors over collected log records (and, for the fraud patterns
the logs cannot show, the platform database's rows) that find attacks, bottlenecks and fraud.

Every detector is a small class fed one record (or row) at a time — ``feed`` then ``finish`` —
with memory bounded by windows and per-subject counters, never by the number of records; each
also has a pure function form over an iterable (``brute_force(records, cfg)``). ``analyze`` feeds
one pass of records to all of them. Modules: detection (the result and the bounded helpers),
windows (sliding windows per subject), histogram (streaming percentiles), security, performance,
fraud (log-based), ledger (database-row based), platform_lines (the sample platform's JSON lines
as Records), analyze (the orchestrator), sources (the SQL that streams records and rows), report
(the weekly markdown)."""
