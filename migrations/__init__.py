"""Versioned SQL migrations, applied in order by ``herald migrate`` (see herald/cli/migrate.py)."""
