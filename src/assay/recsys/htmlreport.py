"""Self-contained HTML reports: matplotlib figures inlined as PNG, tables from rows, no assets.

Written by hand because the reports must be single files an auditor can archive and open
offline; a templating library would add nothing here beyond escaping, which ``html.escape`` does.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:.92em}
img{max-width:100%;margin:.4em 0}code{background:#f4f4f4;padding:0 .2em}
"""


def figure(fig: Any, alt: str) -> str:
    """An ``<img>`` with the figure inlined as base64 PNG; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def pyplot():
    """matplotlib.pyplot with the non-interactive backend (reports are written headless)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return html.escape(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None) -> str:
    if not rows:
        return '<p class="note">(no rows)</p>'
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, intro: str, sections: Sequence[tuple[str, str]]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        intro,
    ]
    parts += [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)


def interval(agg: Mapping[str, Any]) -> str:
    """``value [low, high]`` from an Aggregate dict."""
    return f"{fmt(float(agg['value']))} [{fmt(float(agg['ci_low']))}, {fmt(float(agg['ci_high']))}]"
