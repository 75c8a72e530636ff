"""`python -m bench`: every benchmark, one table, each figure beside its same-run baseline.

`python -m bench pad_sweep publish_path` runs the named ones only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

from bench.common import Figure, machine, save, table

BENCHMARKS: Final = (
    "pad_sweep",
    "publish_path",
    "zk_push",
    "modbus_queue",
    "hall_load",
    "event_latency",
    "board_latency",
    "detection",
)
# the benchmarks whose entry point has another name than `run`
ENTRY: Final = {"zk_push": "figures"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], default=[])
    names = parser.parse_args().names or list(BENCHMARKS)
    figures: list[Figure] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run: Callable[[], Coroutine[Any, Any, list[Figure]]] = getattr(
            module, ENTRY.get(name, "run")
        )
        print(f"running {name} …", file=sys.stderr, flush=True)
        found: list[Figure] = asyncio.run(run())
        save(name, found)
        figures.extend(found)
    print(f"machine: {machine()}")
    print(table(figures))
    save("all", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
