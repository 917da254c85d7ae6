"""feature service."""
