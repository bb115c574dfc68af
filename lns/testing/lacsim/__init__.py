"""A LAC simulator for tests and the load generator (I/O-free core plus a UDP adapter)."""
