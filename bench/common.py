"""What every benchmark shares: a result row with its baseline, and the table they print."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One measured figure beside the baseline it is compared with in the same run."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    goal: str = ""  # e.g. "ratio <= 1.25"
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def machine() -> str:
    cpus = os.cpu_count() or 0
    python = platform.python_version()
    return f"{platform.node()} · {platform.machine()} · {cpus} cores · Python {python}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "baseline", "ratio", "goal")]
    for f in figures:
        verdict = "" if f.met is None else (" ✓" if f.met else " ✗")
        rows.append(
            (
                f.name,
                f"{f.value:,.4g} {f.unit}",
                f"{f.baseline:,.4g} {f.unit} ({f.baseline_name})",
                f"{f.ratio:.2f}",
                f"{f.goal}{verdict}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def save(name: str, figures: list[Figure], extra: dict[str, object] | None = None) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "machine": machine(),
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path
