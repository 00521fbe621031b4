"""admin_api."""
