"""A market simulator that drives the platform through the gateway's public HTTP API.

* `lmsr`: a pure LMSR market maker for binary markets;
* `agents`: informed and noise traders and the user population;
* `world`: markets with hidden truths, their life cycle, trades and signals (pure, seeded);
* `runner`: the async loop that sends it all to a gateway at a target rate (`simulate`), and the
  `om simulate` options (`add_arguments`, `run_from_args`).
"""

from om_cli.simulator.lmsr import LMSR
from om_cli.simulator.runner import (
    SimulationError,
    SimulationStats,
    add_arguments,
    run_from_args,
    simulate,
)
from om_cli.simulator.world import World, WorldConfig

__all__ = [
    "LMSR",
    "SimulationError",
    "SimulationStats",
    "World",
    "WorldConfig",
    "add_arguments",
    "run_from_args",
    "simulate",
]
