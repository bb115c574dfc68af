"""Alembic environment for lns: migrations run on the Connection lns hands over.

`lns.db.database.upgrade()` (and so `lns-admin db upgrade` and the server's
`migrate_on_start`) opens a transaction, puts its Connection in
`config.attributes["connection"]` and runs alembic; this file only configures
the migration context on it. There is no alembic.ini and no URL here.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

import lns.pool.models  # noqa: F401 (registers the pool tables on Base.metadata)
from lns.db.models import Base

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError(
        "the lns migrations run through `lns-admin db upgrade` "
        "(lns.db.database.upgrade), which provides the database connection"
    )
dialect = connection.dialect.name


def include_object(
    item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # PostgreSQL reflects this index's NULLS FIRST as an expression, which the
    # model states as an operator-class option (SQLite has no such syntax):
    # autogenerate would propose dropping and re-creating it every time.
    # tests/pool/test_postgres.py checks its definition instead.
    return not (type_ == "index" and name == "ix_pool_address_free_lru" and dialect == "postgresql")


context.configure(
    connection=connection,
    include_object=include_object,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: later migrations rebuild tables in batches.
    render_as_batch=dialect == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
