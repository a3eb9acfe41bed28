"""Rollouts (jobs) and the agent jobs they hand to nodes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 14:33:15.249191
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rollouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.String(length=15), nullable=False),
    sa.Column('health_command', sa.Text(), nullable=True),
    sa.Column('node_timeout', sa.Integer(), nullable=False),
    sa.Column('nodes', sa.JSON(), nullable=False),
    sa.Column('queue_key', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=40), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('process_group', sa.Integer(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollouts'))
    )
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollouts_cluster'), ['cluster'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollouts_status'), ['status'], unique=False)

    op.create_table('agent_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('rollout_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], name=op.f('fk_agent_jobs_node_id_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_jobs'))
    )
    with op.batch_alter_table('agent_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_jobs_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_agent_jobs_rollout_id'), ['rollout_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_agent_jobs_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('agent_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_agent_jobs_rollout_id'))
        batch_op.drop_index(batch_op.f('ix_agent_jobs_node_id'))

    op.drop_table('agent_jobs')
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollouts_status'))
        batch_op.drop_index(batch_op.f('ix_rollouts_cluster'))

    op.drop_table('rollouts')
