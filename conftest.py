"""Fixtures shared by every test folder: real Kafka, PostgreSQL and Redis (see om_cli.testing)."""

import os

pytest_plugins = ["om_cli.testing"]

# Services started in tests skip freezing their heap (om_runtime.heap): each freeze is a full collection, 0.2-0.5 s,
# at every start; the runtime's own test turns it on.
os.environ.setdefault("OM_GC_FREEZE", "0")
