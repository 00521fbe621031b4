"""admin_api/views."""
