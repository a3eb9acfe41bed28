"""One unfinished rollout per cluster (a partial unique index); agent jobs count
their deliveries and the agent's signs of life (a job whose agent went silent is handed
out again); host names are unique.

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
    bind = op.get_bind()
    taken = bind.execute(sa.text(
        "SELECT hostname FROM nodes GROUP BY hostname HAVING count(*) > 1")).scalars().all()
    if taken:
        raise RuntimeError(
            "several nodes share a host name, which cluster membership cannot tell apart: "
            f"{', '.join(taken)}. Rename the machines (their agents' next heartbeat "
            "records it) or remove the duplicates, then upgrade again.")
    with op.batch_alter_table('nodes') as batch:
        batch.drop_index('ix_nodes_hostname')
        batch.create_index('ix_nodes_hostname', ['hostname'], unique=True)
    # A database from before this revision may hold two unfinished rollouts of one
    # cluster only if two API processes raced; the older ones are failed first.
    superseded = """status IN ('queued', 'running') AND id NOT IN (
            SELECT max(id) FROM rollouts WHERE status IN ('queued', 'running')
            GROUP BY cluster)"""
    op.execute(f"""
        UPDATE agent_jobs SET status = 'cancelled', finished_at = CURRENT_TIMESTAMP
        WHERE status = 'queued' AND rollout_id IN (SELECT id FROM rollouts WHERE {superseded})
    """)
    op.execute(f"""
        UPDATE rollouts SET status = 'failed', finished_at = CURRENT_TIMESTAMP,
               error = 'superseded: another rollout of this cluster was started at once'
        WHERE {superseded}
    """)
    op.add_column('agent_jobs', sa.Column('deliveries', sa.Integer(), server_default='0',
                                          nullable=False))
    op.add_column('agent_jobs', sa.Column('alive_at', sa.DateTime(timezone=True),
                                          nullable=True))
    op.create_index('uq_rollouts_active_cluster', 'rollouts', ['cluster'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index('uq_rollouts_active_cluster', table_name='rollouts')
    with op.batch_alter_table('nodes') as batch:
        batch.drop_index('ix_nodes_hostname')
        batch.create_index('ix_nodes_hostname', ['hostname'], unique=False)
    with op.batch_alter_table('agent_jobs') as batch:
        batch.drop_column('deliveries')
        batch.drop_column('alive_at')
