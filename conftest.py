"""Fixtures shared by every test folder: real Kafka, PostgreSQL and Redis (see om_cli.testing)."""

pytest_plugins = ["om_cli.testing"]
