"""ingest: the system of record for markets, users, trades and signals."""
