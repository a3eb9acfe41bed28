"""Apt repositories, suites, immutable publications, pool files, read credentials, GC runs;
artifacts.md5.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:08:27.567638
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('garbage_collections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('removed_blobs', sa.Integer(), nullable=True),
    sa.Column('removed_bytes', sa.BigInteger(), nullable=True),
    sa.Column('kept_blobs', sa.Integer(), nullable=True),
    sa.Column('grace_seconds', sa.Integer(), nullable=False),
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
    sa.PrimaryKeyConstraint('id', name=op.f('pk_garbage_collections'))
    )
    with op.batch_alter_table('garbage_collections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_garbage_collections_status'), ['status'], unique=False)

    op.create_table('repositories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('origin', sa.String(length=100), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('suites', sa.JSON(), nullable=False),
    sa.Column('components', sa.JSON(), nullable=False),
    sa.Column('architectures', sa.JSON(), nullable=False),
    sa.Column('valid_days', sa.Integer(), nullable=False),
    sa.Column('read_protected', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repositories')),
    sa.UniqueConstraint('name', name=op.f('uq_repositories_name'))
    )
    op.create_table('publications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('suite', sa.String(length=64), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('republished_from', sa.Integer(), nullable=True),
    sa.Column('package_count', sa.Integer(), nullable=True),
    sa.Column('release_sha256', sa.String(length=64), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
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
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_publications_repository_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_publications')),
    sa.UniqueConstraint('repository_id', 'suite', 'number', name=op.f('uq_publications_repository_id_suite_number'))
    )
    with op.batch_alter_table('publications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_publications_repository_id'), ['repository_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_publications_status'), ['status'], unique=False)

    op.create_table('repository_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_repository_credentials_repository_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repository_credentials')),
    sa.UniqueConstraint('repository_id', 'username', name=op.f('uq_repository_credentials_repository_id_username'))
    )
    with op.batch_alter_table('repository_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_repository_credentials_repository_id'), ['repository_id'], unique=False)

    op.create_table('repository_pool',
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('pool_path', sa.String(length=600), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_repository_pool_repository_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repository_id', 'pool_path', name=op.f('pk_repository_pool'))
    )
    op.create_table('publication_entries',
    sa.Column('publication_id', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('component', sa.String(length=64), nullable=False),
    sa.Column('pool_path', sa.String(length=600), nullable=False),
    sa.ForeignKeyConstraint(['publication_id'], ['publications.id'], name=op.f('fk_publication_entries_publication_id_publications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('publication_id', 'artifact_id', name=op.f('pk_publication_entries'))
    )
    op.create_table('publication_files',
    sa.Column('publication_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=300), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['publication_id'], ['publications.id'], name=op.f('fk_publication_files_publication_id_publications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('publication_id', 'path', name=op.f('pk_publication_files'))
    )
    with op.batch_alter_table('publication_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_publication_files_sha256'), ['sha256'], unique=False)

    op.create_table('repository_suites',
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('suite', sa.String(length=64), nullable=False),
    sa.Column('publication_id', sa.Integer(), nullable=True),
    sa.Column('switched_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['publication_id'], ['publications.id'], name=op.f('fk_repository_suites_publication_id_publications')),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_repository_suites_repository_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repository_id', 'suite', name=op.f('pk_repository_suites'))
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('md5', sa.String(length=32), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('md5')

    op.drop_table('repository_suites')
    with op.batch_alter_table('publication_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_publication_files_sha256'))

    op.drop_table('publication_files')
    op.drop_table('publication_entries')
    op.drop_table('repository_pool')
    with op.batch_alter_table('repository_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_repository_credentials_repository_id'))

    op.drop_table('repository_credentials')
    with op.batch_alter_table('publications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_publications_status'))
        batch_op.drop_index(batch_op.f('ix_publications_repository_id'))

    op.drop_table('publications')
    op.drop_table('repositories')
    with op.batch_alter_table('garbage_collections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_garbage_collections_status'))

    op.drop_table('garbage_collections')
