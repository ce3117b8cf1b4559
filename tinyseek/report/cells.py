"""How the report writes a number in a table cell, and a Markdown table: one place, so every table reads alike.

A missing or non-finite value is "—"; fractions are shown as percent with one decimal; FLOPs and other large
counts with 3 significant digits. tests/test_report.py holds every number of report.md to report.json through
these conventions.
"""

from __future__ import annotations

import math
from typing import Any


def num(x: Any, fmt: str = "{:.1f}", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return fmt.format(x)


def pct(x: Any) -> str:
    return num(None if x is None else 100 * x, "{:.1f}")


def interval(ci: Any) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "—"


def human(x: Any) -> str:
    return "—" if x is None else f"{x:.3g}"


def money(x: Any) -> str:
    """Hours or dollars: whole numbers with separators when large, 3 significant digits when small."""
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def label(name: str, kind: str) -> str:
    """A stage as a reader names it: `sft-control (sft)`, but `sft`, not `sft (sft)`."""
    return name if name == kind else f"{name} ({kind})"
