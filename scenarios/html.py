"""The HTML form of scenario reports: one self-contained page (inline SVG and CSS, no scripts, no
external assets) that a CI job can keep as an artifact and anyone can open offline.

Per scenario: a timeline of the client's connections (and other programs' ones), the faults as
applied, the rate of delivered events and the windows of the client's gap notices, then the
expectations and the metrics in tables.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios.report import Report

_WIDTH, _LEFT, _ROW = 900.0, 110.0, 18.0

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.pass { color: #17692b; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


def render_html(reports: list[Report]) -> str:
    passed = sum(r.passed for r in reports)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>feedlab scenario report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>feedlab scenario report: {passed} of {len(reports)} passed</h1>",
    ]
    for report in reports:
        parts.append(_section(report))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _section(r: Report) -> str:
    verdict = '<span class="pass">PASS</span>' if r.passed else '<span class="fail">FAIL</span>'
    out = [f"<h2>{html.escape(r.scenario)} (seed {r.seed}) {verdict}</h2>", _timeline(r)]
    out.append("<table><tr><th>expectation</th><th>bound</th><th>actual</th><th>held</th></tr>")
    for e in r.expectations:
        held = '<span class="pass">yes</span>' if e.held else '<span class="fail">no</span>'
        out.append(
            f"<tr><td>{html.escape(e.metric)}</td><td>{_fmt(e.bound)}</td>"
            f"<td>{_fmt(e.actual)}</td><td>{held}</td></tr>"
        )
    out.append("</table>")
    out.append("<table><tr><th>metric</th><th>total</th>")
    contracts = list(r.per_contract)[:12]  # a 1,001-contract run would not fit a page
    out += [f"<th>{html.escape(c)}</th>" for c in contracts]
    out.append("</tr>")
    for name, value in r.metrics.items():
        row = [f"<td>{html.escape(name)}</td><td>{html.escape(_fmt(value))}</td>"]
        row += [f"<td>{html.escape(_fmt(r.per_contract[c].get(name, '')))}</td>" for c in contracts]
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table>")
    if r.faults:
        out.append("<table><tr><th>fault</th><th>time s</th><th>connections</th><th>note</th></tr>")
        for f in r.faults:
            params = " ".join(f"{k}={v}" for k, v in sorted(f.get("params", {}).items()))
            out.append(
                f"<tr><td>{html.escape(f['kind'] + (' ' + params if params else ''))}</td>"
                f"<td>{_fmt(f['time'])}</td><td>{html.escape(str(f.get('connections', '')))}</td>"
                f"<td>{html.escape(str(f.get('note', '')))}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


def _timeline(r: Report) -> str:
    t = r.timeline
    end = float(t.get("end") or 1.0)
    connections: list[dict[str, Any]] = t.get("connections", [])
    rate: list[int] = t.get("rate", [])
    span = _WIDTH - _LEFT - 10

    def x(seconds: float) -> float:
        return _LEFT + span * min(max(seconds, 0.0), end) / end

    rows = len(connections)
    rate_top = 30 + rows * _ROW + 10
    height = rate_top + 80 + 30
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="timeline of {html.escape(r.scenario)}">'
    ]
    svg.append('<text x="4" y="20">faults</text>')
    for f in r.faults:
        fx = x(float(f["time"]))
        svg.append(
            f'<line x1="{fx:.1f}" y1="24" x2="{fx:.1f}" y2="{height - 30:.0f}" stroke="#b00020" '
            f'stroke-dasharray="3,3"><title>{html.escape(f["kind"])} at {f["time"]} s'
            "</title></line>"
        )
        svg.append(f'<text x="{fx + 2:.1f}" y="20">{html.escape(f["kind"])}</text>')
    for i, c in enumerate(connections):
        y = 30 + i * _ROW
        label = f"{'other' if c['actor'] else 'conn'} {c['id']}"
        closed = c["closed"] if c["closed"] is not None else end
        color = "#999" if c["actor"] else "#2b6cb0"
        code = c["close_code"] or c["client_close_code"]
        svg.append(f'<text x="4" y="{y + 12:.0f}">{label}</text>')
        svg.append(
            f'<rect x="{x(c["opened"]):.1f}" y="{y + 3:.0f}" '
            f'width="{max(1.0, x(closed) - x(c["opened"])):.1f}" height="{_ROW - 6:.0f}" '
            f'fill="{color}"><title>{label}: {c["opened"]} s to '
            f"{'end' if c['closed'] is None else c['closed']} s"
            f"{'' if code is None else f', close {code}'}</title></rect>"
        )
    for g in t.get("gaps", []):
        gx, gw = x(g["start"]), max(1.0, x(g["end"]) - x(g["start"]))
        svg.append(
            f'<rect x="{gx:.1f}" y="{rate_top:.0f}" width="{gw:.1f}" height="80" fill="#f6ad55" '
            f'fill-opacity="0.4"><title>gap notice: {html.escape(g["reason"])}, '
            f"{g['start']} s to {g['end']} s</title></rect>"
        )
    svg.append(f'<text x="4" y="{rate_top + 12:.0f}">events/bucket</text>')
    peak = max(rate, default=0) or 1
    bucket = float(t.get("bucket") or 1.0)
    points = " ".join(
        f"{x(i * bucket):.1f},{rate_top + 80 - 78 * n / peak:.1f}" for i, n in enumerate(rate)
    )
    if points:
        svg.append(f'<polyline points="{points}" fill="none" stroke="#17692b" stroke-width="1.5"/>')
    axis = rate_top + 95
    for i in range(6):
        seconds = end * i / 5
        svg.append(f'<text x="{x(seconds) - 8:.1f}" y="{axis:.0f}">{seconds:.0f}s</text>')
    svg.append(f'<text x="4" y="{axis:.0f}">peak {peak}</text>')
    svg.append("</svg>")
    return "\n".join(svg)
