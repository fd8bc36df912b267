"""preferences: comparison items with candidates, pairwise decisions, candidate generation jobs,
frozen preference versions; training jobs may train on a preference version (dpo|orpo|kto)

Revision ID: 20261201_0011_preferences
Revises: 20261201_0010_review_leases
Create Date: 2026-12-01 23:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import service.core.db

revision = "20261201_0011_preferences"
down_revision = "20261201_0010_review_leases"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table('preference_generation_jobs',
    sa.Column('id', _ID, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('sources', _JSON, nullable=False),
    sa.Column('item_ids', _JSON, nullable=False),
    sa.Column('total_items', sa.Integer(), nullable=False),
    sa.Column('done_items', sa.Integer(), nullable=False),
    sa.Column('failed_items', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_by_id', _ID, nullable=True),
    sa.Column('created_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('queue', sa.String(length=20), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_preference_generation_jobs_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_preference_generation_jobs_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_generation_jobs'))
    )
    with op.batch_alter_table('preference_generation_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_preference_generation_jobs_project_id'), ['project_id'], unique=False)

    op.create_table('preference_versions',
    sa.Column('id', _ID, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('filter', _JSON, nullable=False),
    sa.Column('split', _JSON, nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('counts', _JSON, nullable=False),
    sa.Column('stats', _JSON, nullable=False),
    sa.Column('created_by_id', _ID, nullable=True),
    sa.Column('created_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('built_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('queue', sa.String(length=20), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_preference_versions_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_preference_versions_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_versions')),
    sa.UniqueConstraint('project_id', 'number', name=op.f('uq_preference_versions_project_id_number'))
    )
    op.create_table('preference_items',
    sa.Column('id', _ID, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('prompt', _JSON, nullable=False),
    sa.Column('chunk_id', _ID, nullable=True),
    sa.Column('document_id', _ID, nullable=True),
    sa.Column('sample_id', _ID, nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('unit_key', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('chosen_id', _ID, nullable=True),
    sa.Column('rejected_id', _ID, nullable=True),
    sa.Column('chosen_text', sa.Text(), nullable=True),
    sa.Column('resolved_by_id', _ID, nullable=True),
    sa.Column('resolved_at', service.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by_id', _ID, nullable=True),
    sa.Column('created_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chunk_id'], ['chunks.id'], name=op.f('fk_preference_items_chunk_id_chunks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_preference_items_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_preference_items_document_id_documents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_preference_items_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id'], name=op.f('fk_preference_items_resolved_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_preference_items_sample_id_samples'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_items')),
    sa.UniqueConstraint('project_id', 'unit_key', name=op.f('uq_preference_items_project_id_unit_key'))
    )
    with op.batch_alter_table('preference_items', schema=None) as batch_op:
        batch_op.create_index('ix_preference_items_project_id_status_id', ['project_id', 'status', 'id'], unique=False)

    op.create_table('preference_candidates',
    sa.Column('id', _ID, nullable=False),
    sa.Column('item_id', _ID, nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('provenance', _JSON, nullable=False),
    sa.Column('created_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['preference_items.id'], name=op.f('fk_preference_candidates_item_id_preference_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_candidates')),
    sa.UniqueConstraint('item_id', 'position', name=op.f('uq_preference_candidates_item_id_position'))
    )
    op.create_table('preference_decisions',
    sa.Column('id', _ID, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('item_id', _ID, nullable=False),
    sa.Column('annotator_id', _ID, nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('chosen_id', _ID, nullable=True),
    sa.Column('rejected_id', _ID, nullable=True),
    sa.Column('edited_text', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', service.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['users.id'], name=op.f('fk_preference_decisions_annotator_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['item_id'], ['preference_items.id'], name=op.f('fk_preference_decisions_item_id_preference_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_preference_decisions_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_decisions')),
    sa.UniqueConstraint('item_id', 'annotator_id', name=op.f('uq_preference_decisions_item_id_annotator_id'))
    )
    with op.batch_alter_table('preference_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_preference_decisions_project_id_annotator_id', ['project_id', 'annotator_id'], unique=False)

    op.create_table('preference_version_items',
    sa.Column('id', _ID, nullable=False),
    sa.Column('version_id', _ID, nullable=False),
    sa.Column('item_id', _ID, nullable=False),
    sa.Column('split', sa.String(length=12), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('prompt', service.core.db.CanonicalJSON(), nullable=False),
    sa.Column('chosen', service.core.db.CanonicalJSON(), nullable=True),
    sa.Column('rejected', service.core.db.CanonicalJSON(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['preference_items.id'], name=op.f('fk_preference_version_items_item_id_preference_items'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['version_id'], ['preference_versions.id'], name=op.f('fk_preference_version_items_version_id_preference_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_version_items')),
    sa.UniqueConstraint('version_id', 'item_id', name=op.f('uq_preference_version_items_version_id_item_id'))
    )
    with op.batch_alter_table('preference_version_items', schema=None) as batch_op:
        batch_op.create_index('ix_preference_version_items_version_id_split_position', ['version_id', 'split', 'position'], unique=False)

    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preference_version_id', _ID, nullable=True))
        batch_op.alter_column('dataset_version_id',
               existing_type=_ID,
               nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_training_jobs_preference_version_id_preference_versions'), 'preference_versions', ['preference_version_id'], ['id'], ondelete='RESTRICT')



def downgrade() -> None:
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_training_jobs_preference_version_id_preference_versions'), type_='foreignkey')
        batch_op.alter_column('dataset_version_id',
               existing_type=_ID,
               nullable=False)
        batch_op.drop_column('preference_version_id')

    with op.batch_alter_table('preference_version_items', schema=None) as batch_op:
        batch_op.drop_index('ix_preference_version_items_version_id_split_position')

    op.drop_table('preference_version_items')
    with op.batch_alter_table('preference_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_preference_decisions_project_id_annotator_id')

    op.drop_table('preference_decisions')
    op.drop_table('preference_candidates')
    with op.batch_alter_table('preference_items', schema=None) as batch_op:
        batch_op.drop_index('ix_preference_items_project_id_status_id')

    op.drop_table('preference_items')
    op.drop_table('preference_versions')
    with op.batch_alter_table('preference_generation_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_preference_generation_jobs_project_id'))

    op.drop_table('preference_generation_jobs')
