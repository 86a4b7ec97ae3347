"""The ground-truth report of one scenario run: metrics (in total and per contract), the faults
as applied, each expectation with its bound and actual value, and `wall` — the only part that
may differ between two runs of the same (scenario, seed).

`Report.write` picks the format from the file name: `.json` (what CI keeps) or `.html` (a page
with a timeline, for people). `render_table` is the terminal summary of `feedlab run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Expectation:
    metric: str  # the [expect] key as written: `silent_loss`, `min_reconnects`
    bound: float
    actual: float
    held: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bound": self.bound,
            "actual": self.actual if math.isfinite(self.actual) else None,
            "held": self.held,
        }


@dataclass
class Report:
    scenario: str
    seed: int
    passed: bool
    metrics: dict[str, Any]
    faults: list[dict[str, Any]]
    expectations: list[Expectation]
    wall: dict[str, Any]
    per_contract: dict[str, dict[str, Any]]
    timeline: dict[str, Any] = field(default_factory=dict)  # what the HTML page draws

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "passed": self.passed,
            "metrics": self.metrics,
            "per_contract": self.per_contract,
            "faults": self.faults,
            "expectations": [e.to_json() for e in self.expectations],
            "timeline": self.timeline,
            "wall": self.wall,
        }

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def write(self, path: str | Path) -> None:
        """JSON, or a self-contained HTML page when the name ends in .html / .htm."""
        path = Path(path)
        if path.suffix.lower() in (".html", ".htm"):
            from scenarios.html import render_html

            path.write_text(render_html([self]), encoding="utf-8")
        else:
            path.write_bytes(self.dumps() + b"\n")

    def failures(self) -> list[Expectation]:
        return [e for e in self.expectations if not e.held]

    def summary_line(self) -> str:
        m = self.metrics
        verdict = "PASS" if self.passed else "FAIL"
        line = (
            f"{verdict} {self.scenario} (seed {self.seed}): published {m['published']}, "
            f"delivered {m['delivered']}, silent loss {m['silent_loss']}, "
            f"covered {m['covered_loss']}, injected {m['injected_loss']}, "
            f"duplicates {m['duplicates_delivered']}, reconnects {m['reconnects']}, "
            f"max recovery {_number(m['max_recovery'])}s"
        )
        broken = self.failures()
        if broken:
            line += "; broke " + ", ".join(
                f"{e.metric} = {_number(e.actual)} (bound {_number(e.bound)})" for e in broken
            )
        if m.get("client_error"):
            line += f"; client stopped: {m['client_error']}"
        return line


def write_reports(reports: list[Report], path: str | Path) -> None:
    """One report as itself; several as a JSON list or one HTML page."""
    path = Path(path)
    if len(reports) == 1:
        reports[0].write(path)
    elif path.suffix.lower() in (".html", ".htm"):
        from scenarios.html import render_html

        path.write_text(render_html(reports), encoding="utf-8")
    else:
        data = [r.to_json() for r in reports]
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


_COLUMNS = (
    ("scenario", "scenario"),
    ("result", "result"),
    ("published", "published"),
    ("delivered", "delivered"),
    ("silent", "silent_loss"),
    ("covered", "covered_loss"),
    ("injected", "injected_loss"),
    ("dups", "duplicates_delivered"),
    ("reconn", "reconnects"),
    ("max rec s", "max_recovery"),
    ("resub", "resubscribed_exactly"),
)


def render_table(reports: list[Report]) -> str:
    """Plain text, one row per scenario, then the broken expectations: readable without colour
    (the verdict is a word, not a colour)."""
    rows = [[title for title, _ in _COLUMNS]]
    for r in reports:
        row = []
        for _, key in _COLUMNS:
            if key == "scenario":
                row.append(r.scenario)
            elif key == "result":
                row.append("pass" if r.passed else "FAIL")
            else:
                row.append(_number(r.metrics.get(key)))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    passed = sum(r.passed for r in reports)
    lines.append("")
    lines.append(f"{passed} of {len(reports)} scenarios passed")
    for r in reports:
        for e in r.failures():
            lines.append(
                f"  {r.scenario}: {e.metric} = {_number(e.actual)}, bound {_number(e.bound)}"
            )
        if r.metrics.get("client_error"):
            lines.append(f"  {r.scenario}: client stopped with {r.metrics['client_error']}")
    return "\n".join(lines) + "\n"
