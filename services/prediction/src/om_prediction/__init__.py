"""prediction service."""
