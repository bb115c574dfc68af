"""Pools, ranges, one row per address with its reservation and live lease, the
accounting spool, and the live_session view.

A snapshot: it names its types and constraints itself rather than importing
them from lns.pool.models, so later changes to the models cannot change what
this revision did. tests/pool checks that the two agree at head.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_FREE = "lease_iccid IS NULL AND reserved_iccid IS NULL"
_LEASE_COLUMNS = (
    "lease_iccid",
    "lease_node",
    "lease_tunnel_id",
    "lease_session_id",
    "lease_started_at",
    "lease_origin",
)


def _where(predicate: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(predicate), "postgresql_where": sa.text(predicate)}


def upgrade() -> None:
    op.create_table(
        "pool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pool"),
        sa.UniqueConstraint("name", name="uq_pool_name"),
    )
    op.create_table(
        "pool_range",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(18), nullable=False),
        sa.Column("first_number", sa.BigInteger(), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pool_range"),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pool.id"], name="fk_pool_range_pool_id_pool", ondelete="CASCADE"
        ),
        sa.CheckConstraint("first_number <= last_number", name="ck_pool_range_order"),
    )
    op.create_index("ix_pool_range_pool_id", "pool_range", ["pool_id"])
    op.create_table(
        "range_exclusion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("range_id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(18), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_range_exclusion"),
        sa.ForeignKeyConstraint(
            ["range_id"],
            ["pool_range.id"],
            name="fk_range_exclusion_range_id_pool_range",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("range_id", "network", name="uq_range_exclusion_range_id_network"),
    )
    all_null = " AND ".join(f"{c} IS NULL" for c in _LEASE_COLUMNS)
    none_null = " AND ".join(f"{c} IS NOT NULL" for c in _LEASE_COLUMNS)
    op.create_table(
        "pool_address",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("range_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(15), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_iccid", sa.String(32), nullable=True),
        sa.Column("last_released_at", _TIMESTAMP, nullable=True),
        sa.Column("reserved_iccid", sa.String(32), nullable=True),
        sa.Column("reserved_at", _TIMESTAMP, nullable=True),
        sa.Column("lease_iccid", sa.String(32), nullable=True),
        sa.Column("lease_node", sa.String(64), nullable=True),
        sa.Column("lease_tunnel_id", sa.Integer(), nullable=True),
        sa.Column("lease_session_id", sa.Integer(), nullable=True),
        sa.Column("lease_started_at", _TIMESTAMP, nullable=True),
        sa.Column("lease_origin", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pool_address"),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pool.id"], name="fk_pool_address_pool_id_pool", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["range_id"],
            ["pool_range.id"],
            name="fk_pool_address_range_id_pool_range",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("address", name="uq_pool_address_address"),
        sa.CheckConstraint(f"({all_null}) OR ({none_null})", name="ck_pool_address_lease_complete"),
        sa.CheckConstraint(
            "(reserved_iccid IS NULL AND reserved_at IS NULL)"
            " OR (reserved_iccid IS NOT NULL AND reserved_at IS NOT NULL)",
            name="ck_pool_address_reservation_complete",
        ),
        sa.CheckConstraint(
            "lease_origin IN ('reservation', 'requested', 'sticky', 'lru')",
            name="ck_pool_address_lease_origin_known",
        ),
        sa.CheckConstraint(
            "lease_tunnel_id BETWEEN 0 AND 65535 AND lease_session_id BETWEEN 0 AND 65535",
            name="ck_pool_address_l2tp_ids_in_range",
        ),
    )
    op.create_index("ix_pool_address_pool_id", "pool_address", ["pool_id"])
    op.create_index("ix_pool_address_range_id", "pool_address", ["range_id"])
    # One live lease per ICCID and pool; one reservation per ICCID and pool.
    op.create_index(
        "uq_pool_address_live_lease_iccid",
        "pool_address",
        ["lease_iccid", "pool_id"],
        unique=True,
        **_where("lease_iccid IS NOT NULL"),
    )
    op.create_index(
        "uq_pool_address_reserved_iccid",
        "pool_address",
        ["reserved_iccid", "pool_id"],
        unique=True,
        **_where("reserved_iccid IS NOT NULL"),
    )
    # The free addresses in least-recently-used order (never used first).
    # PostgreSQL needs NULLS FIRST said (in the operator-class slot); SQLite sorts
    # NULLs first by itself and rejects NULLS FIRST in an index.
    op.create_index(
        "ix_pool_address_free_lru",
        "pool_address",
        ["pool_id", "last_released_at", "number"],
        postgresql_ops={"last_released_at": "NULLS FIRST"},
        **_where(_FREE),
    )
    op.create_index(
        "ix_pool_address_free_last_iccid",
        "pool_address",
        ["last_iccid", "pool_id"],
        **_where(f"{_FREE} AND last_iccid IS NOT NULL"),
    )
    op.create_index(
        "ix_pool_address_lease_node",
        "pool_address",
        ["lease_node"],
        **_where("lease_node IS NOT NULL"),
    )
    op.create_table(
        "accounting_spool",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("acct_session_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status_type", sa.Integer(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounting_spool"),
        sa.UniqueConstraint(
            "node", "acct_session_id", "seq", name="uq_accounting_spool_node_acct_session_id_seq"
        ),
    )
    op.create_index(
        "ix_accounting_spool_due", "accounting_spool", ["node", "next_attempt_at", "id"]
    )
    op.execute(
        """
        CREATE VIEW live_session AS
        SELECT pool.name AS pool,
               pool_address.address AS address,
               pool_address.number AS number,
               pool_address.generation AS generation,
               pool_address.lease_iccid AS iccid,
               pool_address.lease_node AS node,
               pool_address.lease_tunnel_id AS tunnel_id,
               pool_address.lease_session_id AS session_id,
               pool_address.lease_started_at AS started_at,
               pool_address.lease_origin AS origin
        FROM pool_address JOIN pool ON pool.id = pool_address.pool_id
        WHERE pool_address.lease_iccid IS NOT NULL
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW live_session")
    op.drop_table("accounting_spool")
    op.drop_table("pool_address")
    op.drop_table("range_exclusion")
    op.drop_table("pool_range")
    op.drop_table("pool")
