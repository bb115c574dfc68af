"""Several nodes: a row per node (heartbeat, adoption), the accounted sessions of
every node (what a Stop needs if the node dies), and who took a lease over.

A snapshot, like 0001: types and names spelled out here.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "node",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("heartbeat_at", _TIMESTAMP, nullable=False),
        sa.Column("sessions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("stopped_at", _TIMESTAMP, nullable=True),
        sa.Column("adopted_by", sa.String(64), nullable=True),
        sa.Column("adopted_at", _TIMESTAMP, nullable=True),
        sa.Column("adoption_done_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_node"),
    )
    op.create_table(
        "node_session",
        sa.Column("acct_session_id", sa.String(64), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("octets_in", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("octets_out", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("packets_in", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("acct_session_id", name="pk_node_session"),
    )
    op.create_index("ix_node_session_node", "node_session", ["node"])
    op.add_column("pool_address", sa.Column("lease_taken_from", sa.String(64), nullable=True))
    op.add_column("pool_address", sa.Column("lease_taken_at", _TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pool_address") as batch:
        batch.drop_column("lease_taken_at")
        batch.drop_column("lease_taken_from")
    op.drop_index("ix_node_session_node", table_name="node_session")
    op.drop_table("node_session")
    op.drop_table("node")
