"""Versioned SQL migrations, applied in order by ``herald migrate`` (see herald/migrate.py)."""
