"""RADIUS client, accounting and dynamic authorization (lands with the RADIUS issue)."""
