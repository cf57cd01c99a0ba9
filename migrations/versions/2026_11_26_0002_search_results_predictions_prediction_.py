"""search results, predictions, prediction log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:18:35.628825
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('image_prediction',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('given_label', sa.String(length=200), nullable=False),
    sa.Column('predicted_label', sa.String(length=200), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=False),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('in_validation', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], name=op.f('fk_image_prediction_image_id_image'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['model_version.id'], name=op.f('fk_image_prediction_model_id_model_version'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image_prediction')),
    sa.UniqueConstraint('model_id', 'image_id', name=op.f('uq_image_prediction_model_id'))
    )
    with op.batch_alter_table('image_prediction', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_prediction_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_prediction_loss'), ['loss'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_prediction_model_id'), ['model_id'], unique=False)

    op.create_table('search_result',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('label_id', sa.Integer(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_url', sa.Text(), nullable=False),
    sa.Column('page_url', sa.Text(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('provider', sa.String(length=50), nullable=False),
    sa.Column('query', sa.String(length=500), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('image_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], name=op.f('fk_search_result_image_id_image'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_search_result_job_id_job'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_id'], ['label.id'], name=op.f('fk_search_result_label_id_label'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_search_result_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_result')),
    sa.UniqueConstraint('job_id', 'image_url', name=op.f('uq_search_result_job_id'))
    )
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_search_result_job_id'), ['job_id'], unique=False)

    op.create_table('prediction_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deployment_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('unknown', sa.Boolean(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('image_key', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployment.id'], name=op.f('fk_prediction_log_deployment_id_deployment'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_log'))
    )
    with op.batch_alter_table('prediction_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prediction_log_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_prediction_log_deployment_id'), ['deployment_id'], unique=False)

    with op.batch_alter_table('deployment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('threshold', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('log_images', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('licence', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('duplicate_group', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_image_duplicate_group'), ['duplicate_group'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sa.JSON(), nullable=True))




def downgrade() -> None:

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('detail')

    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_duplicate_group'))
        batch_op.drop_column('duplicate_group')
        batch_op.drop_column('licence')

    with op.batch_alter_table('deployment', schema=None) as batch_op:
        batch_op.drop_column('log_images')
        batch_op.drop_column('threshold')

    with op.batch_alter_table('prediction_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prediction_log_deployment_id'))
        batch_op.drop_index(batch_op.f('ix_prediction_log_created_at'))

    op.drop_table('prediction_log')
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_result_job_id'))

    op.drop_table('search_result')
    with op.batch_alter_table('image_prediction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_prediction_model_id'))
        batch_op.drop_index(batch_op.f('ix_image_prediction_loss'))
        batch_op.drop_index(batch_op.f('ix_image_prediction_image_id'))

    op.drop_table('image_prediction')

