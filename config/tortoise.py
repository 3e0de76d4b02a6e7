"""Tortoise config for the `tortoise` CLI (makemigrations, migrate, sqlmigrate, history).

.venv/bin/tortoise -c config.tortoise.TORTOISE_ORM makemigrations
"""

from app.db import tortoise_config
from app.settings import Settings

TORTOISE_ORM = tortoise_config(Settings.from_env().database_url)
