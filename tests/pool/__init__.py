"""Tests of the SQL address pools, their migrations, the lns-admin CLI and the Twisted adapter."""
