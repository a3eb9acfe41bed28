"""One unfinished rollout per cluster (a partial unique index); agent jobs count
their deliveries (a job lost on the way is handed out again).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 16:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    # A database from before this revision may hold two unfinished rollouts of one
    # cluster only if two API processes raced; the older ones are failed first.
    op.execute("""
        UPDATE rollouts SET status = 'failed',
               error = 'superseded: another rollout of this cluster was started at once'
        WHERE status IN ('queued', 'running') AND id NOT IN (
            SELECT max(id) FROM rollouts WHERE status IN ('queued', 'running')
            GROUP BY cluster)
    """)
    op.add_column('agent_jobs', sa.Column('deliveries', sa.Integer(), server_default='0',
                                          nullable=False))
    op.create_index('uq_rollouts_active_cluster', 'rollouts', ['cluster'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index('uq_rollouts_active_cluster', table_name='rollouts')
    with op.batch_alter_table('agent_jobs') as batch:
        batch.drop_column('deliveries')
