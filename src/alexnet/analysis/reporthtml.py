"""The pieces of ``alexnet report``'s page (:mod:`alexnet.analysis.report`): the style sheet,
Markdown and JSON as HTML, tables, inlined images, and the page around the sections. Every text
from a file is escaped; every image is a ``data:`` URI, so the page needs no other file."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

GENERATOR = '<meta name="generator" content="alexnet report">'  # marks the pages this command may replace
MAX_JSON_CHARS = 20_000  # a results file larger than this is shown cut short
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
.missing { color: #8a4b00; background: #fff6e5; padding: .4em .6em; border-left: 3px solid #e0a040; }
.caption { color: #555; font-size: .9em; }
"""


def markdown_html(text: str) -> str:
    """Markdown's tables, headings, code blocks and paragraphs; everything else as plain text
    (links are not made: the page points nowhere)."""
    out, table, para, code = [], [], [], None

    def flush():  # noqa: E306
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            body = [r for r in cells[1:] if not all(set(c) <= set(":- ") for c in r)]
            out.append(html_table(cells[0], body))
            table.clear()
        if para:
            out.append("<p>" + html.escape(" ".join(para)) + "</p>")
            para.clear()

    for line in text.splitlines():
        if code is not None:
            if line.strip().startswith("```"):
                out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
                code = None
            else:
                code.append(line)
        elif line.strip().startswith("```"):
            flush()
            code = []
        elif line.strip().startswith("|"):
            if para:
                flush()
            table.append(line)
        elif line.startswith("#"):
            flush()
            level = min(6, max(3, len(line) - len(line.lstrip("#")) + 2))  # under the page's own h1/h2
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif not line.strip():
            flush()
        else:
            if table:
                flush()
            para.append(line.strip())
    flush()
    if code is not None:
        out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
    return "".join(out)


def json_html(value) -> str:
    """An object of plain values or a list of such objects as a table; anything else as JSON."""
    scalar = lambda v: v is None or isinstance(v, (str, int, float, bool))  # noqa: E731
    if isinstance(value, dict) and value and all(scalar(v) or isinstance(v, (list, dict)) for v in value.values()):
        return html_table(["setting", "value"], [[k, v if scalar(v) else json.dumps(v)] for k, v in value.items()])
    if (
        isinstance(value, list)
        and value
        and all(isinstance(r, dict) and all(scalar(v) for v in r.values()) for r in value)
    ):
        keys = list(dict.fromkeys(k for r in value for k in r))
        return html_table(keys, [[r.get(k, "") for k in keys] for r in value])
    text = json.dumps(value, indent=2)
    cut = f"\n... ({len(text) - MAX_JSON_CHARS:,} more characters)" if len(text) > MAX_JSON_CHARS else ""
    return "<pre>" + html.escape(text[:MAX_JSON_CHARS] + cut) + "</pre>"


def html_table(head: list, rows: list[list]) -> str:
    """A table of ``head`` and ``rows``, every cell escaped, numbers right-aligned."""

    def cell(v, tag="td"):
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        numeric = ' class="num"' if isinstance(v, (int, float)) and tag == "td" else ""
        return f"<{tag}{numeric}>{html.escape(text)}</{tag}>"

    return (
        "<table><tr>"
        + "".join(cell(h, "th") for h in head)
        + "</tr>"
        + "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in rows)
        + "</table>"
    )


def img(data: bytes, kind: str, alt: str) -> str:
    """An image of media type ``kind`` inlined as a ``data:`` URI."""
    return f'<img alt="{html.escape(alt)}" src="data:{kind};base64,{base64.b64encode(data).decode()}">'


def figure(draw: Callable[[io.BytesIO], object], alt: str) -> str:
    """A figure drawn into memory by ``draw(buffer)`` (PNG), inlined."""
    buf = io.BytesIO()
    draw(buf)
    return img(buf.getvalue(), "image/png", alt)


def missing(text: str) -> str:
    """A note saying what a section lacks, or why it could not be drawn."""
    return f'<p class="missing">{html.escape(text)}</p>'


def page(title: str, folder: Path, sections: list[tuple[str, str]]) -> str:
    """The whole page: ``sections`` of (heading, HTML) under the title, stamped with ``folder`` and the time."""
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in sections)
    stamp = f"{html.escape(str(folder.resolve()))}, written {datetime.now():%Y-%m-%d %H:%M:%S}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><h1>{html.escape(title)}</h1><p class="caption">{stamp}</p>{body}</body></html>\n'
    )
