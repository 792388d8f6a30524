"""The DR restore drill: restore a backup into a scratch server, start it, check it, measure
RTO and RPO, record the result, tear everything down."""
