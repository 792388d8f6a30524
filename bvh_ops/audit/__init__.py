"""Tamper-evident audit trail (#13): a hash chain of every bvh-ops action and the platform's
audit records, signed digests in the repository, verification and the compliance export."""
