"""The shared runtime of Opinion Market services. Imported by services; never run on its own.

Modules: `settings` (configuration), `kafka` (broker, consumers, dead letters), `db` (PostgreSQL pool and
migrations), `cache` (Redis), `telemetry` (OpenTelemetry and JSON logs), `http` (probes and metrics),
`service` (the app factory and runner that ties them together).
"""
