"""SQL address pools (DESIGN.md section 5): schema, allocator, administration, engines.

Plain synchronous code on SQLAlchemy Connections; `lns.adapters.pool` runs it
off the reactor. `models` is the schema (made only by the alembic migrations in
`migrations/`), `allocator` the allocation rules, `admin` what `lns-admin`
does to pools and leases, `database` the engines and the migrations run from code.
"""
