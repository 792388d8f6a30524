"""Warm standby from the archive and failover: build a standby that replays archived WAL,
report its lag, promote it with checks before and after, fence the old primary, and the
failover drill's stages."""
