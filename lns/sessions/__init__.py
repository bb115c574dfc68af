"""The node's sessions: one record each, their lifecycle policy and their indexes (pure).

:mod:`record` holds what the node knows of one session, :mod:`accounting` what an
accounting record says of it, :mod:`effects` what the supervisor asks the adapters
to do, and :mod:`supervisor` the policy that joins the PPP core, AAA, the address
pool, accounting and the data plane.
"""
