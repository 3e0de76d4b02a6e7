"""Schedules and their runs; delayed starts; a workflow's schedule; steps' ``onFailure``.

Reviewed by hand: two new tables (``schedules``, ``schedule_runs``, whose unique
(schedule, tick) key makes a tick fire once), and columns and indexes added with
``ADD COLUMN`` / ``CREATE INDEX`` on both databases — no table is rebuilt. Steps
created with ``continueOnFailure: true`` before this release get ``on_failure =
'ignore'``, which is what it means.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0003_liveness')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Schedule',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, description='Scoped by namespace like a workflow id.', max_length=192)),
                ('namespace', fields.CharField(max_length=63)),
                ('cron', fields.CharField(null=True, description='Five cron fields (aliases expanded), or null with ``every``.', max_length=256)),
                ('every', fields.BigIntField(null=True, description='Seconds between ticks, or null with ``cron``.')),
                ('timezone', fields.CharField(max_length=64)),
                ('start_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('end_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('fire_limit', fields.IntField(null=True, description='Fires in all (``limit``), or null.')),
                ('overlap', fields.CharField(max_length=16)),
                ('catchup_window', fields.FloatField()),
                ('jitter', fields.FloatField()),
                ('paused', fields.BooleanField(default=False)),
                ('note', fields.TextField(null=True, unique=False)),
                ('workflow', fields.JSONField(description='The create body each fire uses (without ``id``), as it was sent.', encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('next_run_at', fields.DatetimeField(null=True, description='The next tick (its scheduled time), and when it fires (the tick plus its jitter),', auto_now=False, auto_now_add=False)),
                ('next_fire_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_run_at', fields.DatetimeField(null=True, description='When the schedule last fired a workflow.', auto_now=False, auto_now_add=False)),
                ('fired_count', fields.IntField(default=0)),
                ('buffered_at', fields.DatetimeField(null=True, description='``buffer_one``: the tick waiting for the previous workflow to end, or null.', auto_now=False, auto_now_add=False)),
                ('version', fields.IntField(default=0, description='Bumped by every replace, pause and resume: a firing pass that read an older')),
            ],
            options={'table': 'schedules', 'app': 'models', 'indexes': [Index(fields=['paused', 'next_fire_at']), Index(fields=['namespace', 'id'])], 'pk_attr': 'id', 'table_description': 'A recurring workflow (DESIGN §8). Its whole state is here: APScheduler only wakes'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ScheduleRun',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('schedule', fields.ForeignKeyField('models.Schedule', source_field='schedule_id', db_constraint=True, to_field='id', related_name='runs', on_delete=OnDelete.CASCADE)),
                ('scheduled_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('fired_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('workflow_id', fields.CharField(null=True, description='The workflow fired (scoped id), or null (skipped, missed, buffered).', max_length=192)),
                ('outcome', fields.CharField(description='fired, skipped, missed or buffered.', max_length=16)),
            ],
            options={'table': 'schedule_runs', 'app': 'models', 'unique_together': (('schedule', 'scheduled_at'),), 'pk_attr': 'id', 'table_description': 'What one tick of a schedule came to. The unique (schedule, tick) key is what'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Step',
            name='on_failure',
            field=fields.CharField(default='fail', description='What failing for good does to its dependents: fail, ignore, remove or continue.', db_default='fail', max_length=16),
        ),
        ops.AddField(
            model_name='Workflow',
            name='schedule_id',
            field=fields.CharField(null=True, description='The schedule that fired the workflow (its scoped id), and the tick it fired for.', max_length=192),
        ),
        ops.AddField(
            model_name='Workflow',
            name='scheduled_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Workflow',
            name='start_at',
            field=fields.DatetimeField(null=True, description='A delayed start (``startAt`` / ``delay``): the workflow is ``pending`` until then.', auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='Workflow',
            index=Index(fields=['status', 'start_at']),
        ),
        ops.AddIndex(
            model_name='Workflow',
            index=Index(fields=['schedule_id', 'status']),
        ),
        ops.RunSQL(
            'UPDATE "steps" SET "on_failure" = \'ignore\' WHERE "continue_on_failure"',
            'SELECT 1',
        ),
    ]
