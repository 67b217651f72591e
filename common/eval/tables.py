"""The one Markdown table formatter of every report (comparison of methods, benchmark sections, the demo)."""
from __future__ import annotations


def format_value(v) -> str:
    """Floats rounded for reading (4 decimals below 1, fewer above); everything else as ``str``."""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}" if abs(v) < 1e4 else f"{v:.0f}"


def markdown_table(rows: list[dict], cols: list[str], title: str = "", fmt=format_value) -> str:
    """A Markdown table of ``rows`` (dicts) over ``cols``; a missing cell is empty; ``title`` above it."""
    lines = ([f"\n{title}"] if title else []) + ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) if c in r else "" for c in cols) + " |" for r in rows]
    return "\n".join(lines)
