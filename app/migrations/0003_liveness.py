"""Liveness rows, completion numbers from the database, and ``previousSteps`` modes.

Reviewed by hand. ``servers`` is a new table (live processes renew their row); the
added columns use SQLite's ``ADD COLUMN`` (no table rebuild) and PostgreSQL's, and
``deliveries.started`` is renamed ``claimed`` with ``RENAME COLUMN`` on both.

``tortoise makemigrations`` also wrote an ``AlterField`` for ``steps.completion_seq``
whose only change is its description: on SQLite that would rebuild the ``steps``
table (dropping its indexes), so it is recorded in the migration state only.

A workflow's ``completions`` counter numbers its completed steps from now on; it
starts above every number its steps already hold (before this release they were
clock readings in nanoseconds), so reverse completion order holds across the
upgrade for workflows under way.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class AlterFieldInStateOnly(ops.AlterField):
    """An AlterField that changes nothing in the database (a description, say)."""

    async def database_forward(self, app_label, old_state, new_state, state_editor=None):
        return

    async def database_backward(self, app_label, old_state, new_state, state_editor=None):
        return

class Migration(migrations.Migration):
    dependencies = [('models', '0002_tenants')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Server',
            fields=[
                ('owner', fields.CharField(primary_key=True, unique=True, db_index=True, description="The process's lease owner name (``Store.owner``).", max_length=64)),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('seen_at', fields.DatetimeField(description="When the process last said it is alive (the database's clock).", auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'servers', 'app': 'models', 'pk_attr': 'owner', 'table_description': 'A live server process: renewed every few seconds while it runs.'},
            bases=['Model'],
        ),
        ops.RenameField(
            model_name='Delivery',
            old_name='started',
            new_name='claimed',
        ),
        AlterFieldInStateOnly(
            model_name='Step',
            name='completion_seq',
            field=fields.BigIntField(null=True, description='Orders completions for saga compensation (reverse completion order): the'),
        ),
        ops.AddField(
            model_name='Workflow',
            name='completions',
            field=fields.BigIntField(default=0, description="Steps completed so far: each completion takes the next number as its step's", db_default=0),
        ),
        ops.AddField(
            model_name='Workflow',
            name='previous_steps',
            field=fields.CharField(default='ancestors', description='What ``previousSteps`` holds in step requests: ``ancestors`` or ``parents``.', db_default='ancestors', max_length=16),
        ),
        ops.AddField(
            model_name='Workflow',
            name='reopened',
            field=fields.IntField(default=0, description='How many times steps were re-opened (a retry): states of settled steps cached', db_default=0),
        ),
        ops.RunSQL(
            'UPDATE "workflows" SET "completions" = COALESCE((SELECT MAX(s."completion_seq")'
            ' FROM "steps" AS s WHERE s."workflow_id" = "workflows"."id"), 0)',
            'SELECT 1',
        ),
    ]
