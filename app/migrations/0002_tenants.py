"""Tenants: API keys and namespace signing secrets, workflows scoped by namespace.

Reviewed by hand. ``tortoise makemigrations`` wrote the two ``AlterField``s (wider
``workflows.id`` and ``workflows.idempotency_key``) as plain ``ops.AlterField``,
which on SQLite rebuilds the ``workflows`` table: ``DROP TABLE workflows`` would
cascade-delete every step, delivery, attempt and event, and drop the table's
indexes. SQLite does not enforce VARCHAR lengths, so there the widening is
recorded in the migration state only; PostgreSQL alters the columns, and also
the ``workflow_id`` columns that reference ``workflows.id`` (which the generated
migration left at 128). Everything else only adds tables, a column with a
database default, and indexes.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index


class AlterFieldUnlessSqlite(ops.AlterField):
    """An AlterField that SQLite records without rebuilding the table."""

    async def database_forward(self, app_label, old_state, new_state, state_editor=None):
        if state_editor is None or state_editor.DIALECT == "sqlite":
            return
        await super().database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(self, app_label, old_state, new_state, state_editor=None):
        if state_editor is None or state_editor.DIALECT == "sqlite":
            return
        await super().database_backward(app_label, old_state, new_state, state_editor)


class RunSQLUnlessSqlite(ops.RunSQL):
    """Raw SQL for the databases that enforce column lengths (not SQLite)."""

    async def database_forward(self, app_label, old_state, new_state, state_editor=None):
        if state_editor is None or state_editor.DIALECT == "sqlite":
            return
        await super().database_forward(app_label, old_state, new_state, state_editor)

    async def database_backward(self, app_label, old_state, new_state, state_editor=None):
        if state_editor is None or state_editor.DIALECT == "sqlite":
            return
        await super().database_backward(app_label, old_state, new_state, state_editor)


#: The columns that hold a workflow's scoped id (namespace/id, at most 63 + 1 + 128).
WORKFLOW_REFERENCES = ("steps", "deliveries", "attempts", "events")


class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ApiKey',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, description='Public handle of the key (key_...), used to list and revoke it.', max_length=32)),
                ('namespace', fields.CharField(max_length=63)),
                ('key_hash', fields.CharField(unique=True, description='Hex SHA-256 of the key (keys are random 256-bit tokens, so a fast hash suffices).', max_length=64)),
                ('prefix', fields.CharField(description='The first characters of the key, to recognise it in a list (not enough to use it).', max_length=16)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_used_at', fields.DatetimeField(null=True, description='Updated at most once a minute per process.', auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_keys', 'app': 'models', 'indexes': [Index(fields=['namespace', 'created_at'])], 'pk_attr': 'id', 'table_description': 'An API key of a namespace. Only its SHA-256 is kept: the key is shown once, at creation.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='NamespaceSecret',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('namespace', fields.CharField(db_index=True, max_length=63)),
                ('secret', fields.TextField(description='A whsec_ secret. Kept as is: it is an HMAC key, needed to sign.', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'namespace_secrets', 'app': 'models', 'pk_attr': 'id', 'table_description': "A signing secret of one namespace. All of a namespace's secrets sign its requests."},
            bases=['Model'],
        ),
        AlterFieldUnlessSqlite(
            model_name='Workflow',
            name='id',
            field=fields.CharField(primary_key=True, unique=True, db_index=True, description='The id scoped by namespace: the public id in the default namespace, else namespace/id.', max_length=192),
        ),
        AlterFieldUnlessSqlite(
            model_name='Workflow',
            name='idempotency_key',
            field=fields.CharField(null=True, unique=True, description='The Idempotency-Key, prefixed by the namespace and a unit separator outside the default one.', max_length=320),
        ),
        RunSQLUnlessSqlite(
            [f'ALTER TABLE "{table}" ALTER COLUMN "workflow_id" TYPE VARCHAR(192)' for table in WORKFLOW_REFERENCES],
            [f'ALTER TABLE "{table}" ALTER COLUMN "workflow_id" TYPE VARCHAR(128)' for table in WORKFLOW_REFERENCES],
        ),
        ops.AddField(
            model_name='Workflow',
            name='namespace',
            field=fields.CharField(default='default', description='The namespace of the API key that created the workflow.', db_default='default', max_length=63),
        ),
        ops.AddIndex(
            model_name='Workflow',
            index=Index(fields=['namespace', 'created_at', 'id']),
        ),
    ]
