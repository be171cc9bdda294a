"""index orders by decision time, for the dashboard's latency and recent orders

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_decided_at", "orders", ["decided_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_decided_at", table_name="orders")
