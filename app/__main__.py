"""``python -m app``: operator commands (see app/cli.py)."""

from app.cli import main

raise SystemExit(main())
