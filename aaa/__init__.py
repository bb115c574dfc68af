"""AAA back ends for lns."""
