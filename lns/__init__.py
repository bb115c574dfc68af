"""lns: an L2TP Network Server (RFC 2661) on Twisted."""
