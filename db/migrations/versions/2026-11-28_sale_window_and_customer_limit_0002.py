"""sale window and per-customer limit on products

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("products", sa.Column("sale_opens_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("products", sa.Column("sale_closes_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("products", sa.Column("per_customer_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("products", "per_customer_limit")
    op.drop_column("products", "sale_closes_at")
    op.drop_column("products", "sale_opens_at")
