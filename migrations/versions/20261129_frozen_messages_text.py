"""dataset_version_items.messages: canonical JSON text instead of JSONB

Frozen messages are kept as the exact text orjson writes, so that an export copies them to the
file without PostgreSQL re-rendering JSONB or Python parsing and re-serialising them. Existing
rows are rewritten into that canonical text (the values do not change, so neither do exports).

Revision ID: 20261129_0003
Revises: 20261129_0002
Create Date: 2026-11-29 15:50:00
"""
import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "20261129_0003"
down_revision = "20261129_0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_BATCH = 5000


def _canonicalise() -> None:
    """Rewrite every row's messages as compact orjson text, in id order, a batch at a time."""
    conn = op.get_bind()
    items = sa.table("dataset_version_items", sa.column("id", sa.BigInteger),
                     sa.column("messages", sa.Text))
    last = 0
    while True:
        rows = conn.execute(sa.select(items.c.id, items.c.messages).where(items.c.id > last)
                            .order_by(items.c.id).limit(_BATCH)).all()
        if not rows:
            return
        changed = []
        for row_id, text in rows:
            canonical = orjson.dumps(orjson.loads(text)).decode()
            if canonical != text:
                changed.append({"row_id": row_id, "value": canonical})
        if changed:
            conn.execute(items.update().where(items.c.id == sa.bindparam("row_id"))
                         .values(messages=sa.bindparam("value")), changed)
        last = rows[-1][0]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("dataset_version_items", "messages", type_=sa.Text(),
                        existing_type=postgresql.JSONB(astext_type=sa.Text()),
                        postgresql_using="messages::text", existing_nullable=False)
    else:
        with op.batch_alter_table("dataset_version_items", schema=None) as batch_op:
            batch_op.alter_column("messages", type_=sa.Text(), existing_type=sa.JSON(),
                                  existing_nullable=False)
    _canonicalise()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("dataset_version_items", "messages", type_=_JSON,
                        existing_type=sa.Text(), postgresql_using="messages::jsonb",
                        existing_nullable=False)
    else:
        with op.batch_alter_table("dataset_version_items", schema=None) as batch_op:
            batch_op.alter_column("messages", type_=sa.JSON(), existing_type=sa.Text(),
                                  existing_nullable=False)
