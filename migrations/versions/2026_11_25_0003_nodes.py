"""Nodes and node events; enrollment uses and the node of a node token on api_tokens.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 14:23:31.141364
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('nodes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('machine_id', sa.String(length=32), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('architecture', sa.String(length=40), nullable=False),
    sa.Column('kernel_release', sa.String(length=100), nullable=False),
    sa.Column('codename', sa.String(length=64), nullable=False),
    sa.Column('kernel_packages', sa.JSON(), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enrolled_with', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nodes')),
    sa.UniqueConstraint('machine_id', name=op.f('uq_nodes_machine_id'))
    )
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nodes_hostname'), ['hostname'], unique=False)

    op.create_table('node_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], name=op.f('fk_node_events_node_id_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_events'))
    )
    with op.batch_alter_table('node_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_events_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_events_node_id'), ['node_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_uses', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('uses', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('node_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_node_id'), ['node_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_node_id'))
        batch_op.drop_column('node_id')
        batch_op.drop_column('uses')
        batch_op.drop_column('max_uses')

    with op.batch_alter_table('node_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_events_node_id'))
        batch_op.drop_index(batch_op.f('ix_node_events_kind'))

    op.drop_table('node_events')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodes_hostname'))

    op.drop_table('nodes')
