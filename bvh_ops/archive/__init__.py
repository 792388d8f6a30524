"""The archive tier (#17): the monthly archive (its class, its object locks) and the rendering of
GFS retention plans. Replica, key rotation and standby/failover live beside it."""
