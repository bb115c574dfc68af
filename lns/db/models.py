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

__all__ = ["NODE_NAME_LENGTH", "AccountingSpool", "Base", "Node", "NodeSession", "UtcDateTime"]

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


class Node(Base):
    """One LNS node sharing this database (DESIGN.md section 9): who it is, and its heartbeat.

    A node writes its row at start and moves `heartbeat_at` every heartbeat
    interval; one silent for longer than the dead limit is dead, and exactly one
    surviving node adopts it (`adopted_by`, claimed in one UPDATE): it writes the
    Stops of the dead node's sessions, delivers its spool and ends its leases.
    `instance` changes at every start, so a node can tell its own row from a twin's.
    """

    __tablename__ = "node"

    name: Mapped[str] = mapped_column(String(NODE_NAME_LENGTH), primary_key=True)
    instance: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(64))  # its [l2tp] listen address
    version: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    sessions: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    stopped_at: Mapped[datetime | None]  # a clean stop: not dead, nothing to adopt
    adopted_by: Mapped[str | None] = mapped_column(String(NODE_NAME_LENGTH))
    adopted_at: Mapped[datetime | None]
    adoption_done_at: Mapped[datetime | None]  # the adopter delivered its spool


class NodeSession(Base):
    """A live, accounted session of some node: what its Stop needs if the node dies.

    Written with its Start (in the spool's transaction), updated with each
    Interim-Update, deleted with its Stop. `attributes` are the Start record's
    (JSON, as in the spool), from which an adopter builds the Stop; the counters
    are as of the last record.
    """

    __tablename__ = "node_session"
    __table_args__ = (Index("ix_node_session_node", "node"),)

    acct_session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(NODE_NAME_LENGTH))
    started_at: Mapped[datetime]  # IPCP Opened
    attributes: Mapped[str] = mapped_column(Text)
    octets_in: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    octets_out: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    packets_in: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    packets_out: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime]
