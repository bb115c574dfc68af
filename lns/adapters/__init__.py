"""Thin Twisted adapters around the I/O-free cores."""
