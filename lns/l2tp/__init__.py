"""L2TP version 2 (RFC 2661): wire codec and I/O-free control-plane state machines."""
