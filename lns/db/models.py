"""The tables the whole node shares, and the declarative base of every model.

The schema itself is made only by the migrations in `migrations/versions/`;
these models describe it for queries and for `alembic revision --autogenerate`.
The address pools add their tables in :mod:`lns.pool.models`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["NODE_NAME_LENGTH", "AccountingSpool", "Base", "UtcDateTime"]

# Stable constraint names, so that later migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NODE_NAME_LENGTH = 64


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores `timestamp with time zone`; SQLite stores the naive UTC
    text SQLAlchemy writes ("YYYY-MM-DD HH:MM:SS.ffffff", which sorts in time
    order). Naive datetimes are refused: a local time would silently shift.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        utc = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012 (SQLAlchemy's declarative API)


class AccountingSpool(Base):
    """RADIUS accounting records waiting for their acknowledgement (DESIGN.md section 4).

    Written by the RADIUS accounting issue: one row per Accounting-Request,
    deleted once acknowledged. `seq` orders the records of one session
    (Start, Interim-Updates, Stop) so they are sent in order.
    """

    __tablename__ = "accounting_spool"
    __table_args__ = (
        UniqueConstraint("node", "acct_session_id", "seq"),
        Index("ix_accounting_spool_due", "node", "next_attempt_at", "id"),
    )

    # SQLite autoincrements only an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    node: Mapped[str] = mapped_column(String(NODE_NAME_LENGTH))
    acct_session_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    status_type: Mapped[int] = mapped_column(Integer)  # Acct-Status-Type (RFC 2866 5.1)
    attributes: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime]
