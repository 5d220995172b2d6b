"""``alexnet report``: one self-contained HTML page for a run folder or an experiment folder.

A run folder's page shows its settings (``config.json``, ``command.txt``, ``env.json``), its
learning curves and epoch table (drawn from ``metrics.jsonl``), and from its checkpoint (``best.pt``,
else ``last.pt``) the confusion matrix, conv1's filters, sample predictions and nearest neighbours
(:mod:`alexnet.analysis.visualize`). Any other folder is read generically: its Markdown tables, JSON results
and PNG/SVG figures, and a summary line for every run folder inside it (an experiment's runs).

Every image is inlined as a base64 ``data:`` URI and the style sheet is in the page: it opens from
a disk, a mail or an archive with no network and no other file. Figures are drawn in memory; the
only file written is the page itself (``RUN_DIR/report.html`` unless told), and a file there that
this command did not write is never replaced. What is missing (no checkpoint yet, data no longer
installed) is said on the page instead of stopping it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from alexnet.errors import CheckpointError, ConfigError, DataError
from alexnet.formats import atomic_write
from alexnet.plots import plot_confusion, plot_curves, read_metrics
from alexnet.training.rundir import RunFolder

GENERATOR = '<meta name="generator" content="alexnet report">'  # marks the pages this command may replace
# what a run writes and the page already shows (drawn again from the files they come from)
RUN_FILES = {
    "config.json",
    "env.json",
    "split.json",
    "bad_images.json",
    "evaluation.json",
    "metrics.jsonl",
    "curves.png",
    "confusion.png",
    "filters.png",
    "predictions.png",
    "neighbours.png",
}
SKIPPED_FOLDERS = {"checkpoints", "tb"}
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


def write_report(
    folder: str | Path, out: str | Path | None = None, *, device: str = "auto", train_images: int = 10_000
) -> Path:
    """Write the page for ``folder`` (a run folder, or an experiment folder of tables, figures and
    runs) to ``out`` (default ``folder/report.html``) and return its path. ``train_images`` is how
    many training images the neighbour search covers; ``device`` runs the checkpoint's figures."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give a run folder (made by alexnet train) or an experiment folder")
    run = RunFolder(folder)
    is_run = run.config_file.is_file() or run.metrics_file.is_file() or (folder / "checkpoints").is_dir()
    runs = sorted(p.parent for p in folder.glob("*/config.json"))
    files = _folder_files(folder, skip_run_files=is_run)
    if not (is_run or runs or files):
        raise DataError(
            f"{folder}: not a run folder (no config.json, metrics.jsonl or checkpoints/) nor an experiment folder "
            f"(no tables, figures or runs); give a folder made by alexnet train or alexnet experiment"
        )
    out = Path(out) if out is not None else folder / "report.html"
    if out.exists() and GENERATOR not in out.read_text(errors="replace")[:2000]:
        raise ConfigError(
            f"--out {out}: the file exists and was not written by alexnet report; pick another --out or move it"
        )
    sections = _run_sections(run, device, train_images) if is_run else []
    if runs:
        sections.append(("Runs in this folder", _runs_table(runs)))
    if files:
        sections.append(
            (
                "Tables and figures" if not is_run else "Other tables and figures in the folder",
                _files_html(folder, files),
            )
        )
    atomic_write(out, lambda tmp: tmp.write_text(_page(f"alexnet report: {folder.resolve().name}", folder, sections)))
    return out


# --------------------------------------------------------------------------------------------
# A run folder


def _run_sections(run: RunFolder, device: str, train_images: int) -> list[tuple[str, str]]:
    sections = [("Settings", _settings_html(run))]
    if run.metrics_file.is_file():
        sections.append(
            (
                "Learning curves",
                _figure(lambda buf: plot_curves(run.metrics_file, buf), "learning curves")
                + _metrics_table(read_metrics(run.metrics_file)),
            )
        )
    else:
        sections.append(
            ("Learning curves", _missing(f"no {run.metrics_file.name} yet: the run has not finished an epoch"))
        )
    checkpoint = run.best if run.best.is_file() else run.last
    if not checkpoint.is_file():
        note = _missing(
            f"no checkpoint yet ({run.best.parent}/best.pt or last.pt): the confusion matrix, filters, "
            "sample predictions and neighbours appear once the run has finished an epoch"
        )
        return sections + [("Confusion matrix, filters, predictions and neighbours", note)]
    from alexnet.analysis import visualize

    said = f'<p class="caption">from {html.escape(str(checkpoint))}</p>'
    sections.append(("Confusion matrix", said + _guarded(lambda: _confusion_html(run, checkpoint, device))))
    sections.append(
        (
            "Filters (figure 3)",
            said
            + _guarded(
                lambda: (
                    _figure(lambda buf: visualize.visualize_filters(checkpoint, buf), "conv1 filters")
                    + (
                        '<p class="caption">conv1\'s kernels, each min-max scaled on its own; two towers as two '
                        "blocks.</p>"
                    )
                )
            ),
        )
    )
    sections.append(
        (
            "Sample predictions (figure 4, left)",
            said
            + _guarded(
                lambda: (
                    _figure(
                        lambda buf: visualize.visualize_predictions(checkpoint, out=buf, device=device),
                        "test images and their top-5",
                    )
                    + '<p class="caption">test images with their top-5 classes; the true class\'s bar is red.</p>'
                )
            ),
        )
    )

    def neighbours() -> str:
        found = {}
        picture = _figure(
            lambda buf: found.update(
                visualize.visualize_neighbours(checkpoint, out=buf, device=device, train_images=train_images)[1]
            ),
            "nearest training images in FC7 space",
        )
        return picture + (
            f'<p class="caption">nearest by Euclidean distance between FC7 features ({found["features"]:,}-d, after '
            f"the ReLU), searched over {found['searched']:,} training images drawn with seed 0.</p>"
        )

    sections.append(("Nearest neighbours (figure 4, right)", said + _guarded(neighbours)))
    return sections


def _settings_html(run: RunFolder) -> str:
    parts = []
    command = run.path / "command.txt"
    if command.is_file():
        parts.append("<h3>Command</h3><pre>" + html.escape(command.read_text().strip()) + "</pre>")
    for name, title in (("config.json", "Resolved settings"), ("env.json", "Environment")):
        path = run.path / name
        if not path.is_file():
            parts.append(_missing(f"no {name} in the folder"))
            continue
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            parts.append(_missing(f"{path}: not readable JSON ({e})"))
            continue
        parts.append(f"<h3>{title} ({name})</h3>" + _json_html(value))
    return "".join(parts)


def _metrics_table(rows: list[dict]) -> str:
    keys = [
        ("epoch", "epoch", "{}"),
        ("train_loss", "train loss", "{:.4f}"),
        ("train_acc", "train top-1", "{:.2%}"),
        ("val_loss", "val loss", "{:.4f}"),
        ("val_top1", "val top-1", "{:.2%}"),
        ("val_top5", "val top-5", "{:.2%}"),
        ("lr", "learning rate", "{:.4g}"),
        ("images_per_second", "images/s", "{:,.0f}"),
    ]
    head = "".join(f"<th>{title}</th>" for _, title, _ in keys)
    body = ""
    for r in rows:
        cells = [
            (fmt.format(r[k] + 1 if k == "epoch" else r[k]) if isinstance(r.get(k), (int, float)) else "")
            for k, _, fmt in keys
        ]
        body += "<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' for c in cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _confusion_html(run: RunFolder, checkpoint: Path, device: str) -> str:
    """From ``evaluation.json`` when ``alexnet evaluate`` wrote it after the checkpoint; else the
    checkpoint is evaluated here (its files go to a temporary folder, not the run's)."""
    saved = run.path / "evaluation.json"
    if saved.is_file() and saved.stat().st_mtime >= checkpoint.stat().st_mtime:
        result, whence = json.loads(saved.read_text()), f"from {saved.name} (alexnet evaluate)"
    else:
        from alexnet.inference.evaluate import evaluate_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            result, whence = evaluate_checkpoint(checkpoint, device=device, out=tmp), "evaluated for this page"
    summary = (
        f"<p>top-1 accuracy <b>{result['top1']:.2%}</b>, top-5 <b>{result['top5']:.2%}</b> on {result['images']:,} "
        "images "
        f"of {html.escape(str(result['data']))} ({whence}).</p>"
    )
    return summary + _figure(
        lambda buf: plot_confusion(result["confusion"], result["classes"], buf), "confusion matrix"
    )


# --------------------------------------------------------------------------------------------
# Any folder: tables, results, figures, runs


def _folder_files(folder: Path, *, skip_run_files: bool) -> list[Path]:
    """The Markdown, JSON, PNG and SVG files under ``folder``, leaving out run folders inside it
    (summarised instead), checkpoints, TensorBoard events, the pages this command wrote and, in a
    run folder, the run's own files (shown above)."""
    found = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIPPED_FOLDERS and not d.startswith(".") and not (here / d / "config.json").is_file()
        )
        for name in sorted(names):
            path = here / name
            if path.suffix.lower() not in (".md", ".json", ".png", ".svg") or (
                skip_run_files and here == folder and name in RUN_FILES
            ):
                continue
            found.append(path)
    return found


def _files_html(folder: Path, files: list[Path]) -> str:
    parts = []
    for path in files:
        name = html.escape(str(path.relative_to(folder)))
        try:
            suffix = path.suffix.lower()
            if suffix == ".md":
                body = _markdown_html(path.read_text(errors="replace"))
            elif suffix == ".json":
                body = _json_html(json.loads(path.read_text()))
            else:
                kind = "image/png" if suffix == ".png" else "image/svg+xml"
                body = _img(path.read_bytes(), kind, path.name)
        except (OSError, ValueError) as e:
            body = _missing(f"{path}: not readable ({e})")
        parts.append(f"<h3>{name}</h3>{body}")
    return "".join(parts)


def _runs_table(runs: list[Path]) -> str:
    """One line per run folder: its model, input size, epochs and accuracy, from its own files."""
    rows = []
    for path in runs:
        try:
            cfg = json.loads((path / "config.json").read_text())
            metrics = read_metrics(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
        except (OSError, ValueError) as e:
            rows.append([path.name, f"not readable: {e}", "", "", "", ""])
            continue
        last = metrics[-1] if metrics else {}
        best = max((m.get("val_top1", 0) for m in metrics), default=None)
        rows.append(
            [
                path.name,
                str(cfg.get("model", "")),
                str(cfg.get("image_size", "")),
                f"{len(metrics)} / {cfg.get('epochs', '?')}",
                f"{last['val_top1']:.2%}" if "val_top1" in last else "",
                f"{best:.2%}" if best is not None else "",
            ]
        )
    return _table(["run", "model", "image size", "epochs done", "last val top-1", "best val top-1"], rows)


def _markdown_html(text: str) -> str:
    """Markdown's tables, headings, code blocks and paragraphs; everything else as plain text
    (links are not made: the page points nowhere)."""
    out, table, para, code = [], [], [], None

    def flush():  # noqa: E306
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            body = [r for r in cells[1:] if not all(set(c) <= set(":- ") for c in r)]
            out.append(_table(cells[0], body))
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


def _json_html(value) -> str:
    """An object of plain values or a list of such objects as a table; anything else as JSON."""
    scalar = lambda v: v is None or isinstance(v, (str, int, float, bool))  # noqa: E731
    if isinstance(value, dict) and value and all(scalar(v) or isinstance(v, (list, dict)) for v in value.values()):
        return _table(["setting", "value"], [[k, v if scalar(v) else json.dumps(v)] for k, v in value.items()])
    if (
        isinstance(value, list)
        and value
        and all(isinstance(r, dict) and all(scalar(v) for v in r.values()) for r in value)
    ):
        keys = list(dict.fromkeys(k for r in value for k in r))
        return _table(keys, [[r.get(k, "") for k in keys] for r in value])
    text = json.dumps(value, indent=2)
    cut = f"\n... ({len(text) - MAX_JSON_CHARS:,} more characters)" if len(text) > MAX_JSON_CHARS else ""
    return "<pre>" + html.escape(text[:MAX_JSON_CHARS] + cut) + "</pre>"


# --------------------------------------------------------------------------------------------
# HTML pieces


def _table(head: list, rows: list[list]) -> str:
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


def _img(data: bytes, kind: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{kind};base64,{base64.b64encode(data).decode()}">'


def _figure(draw: Callable[[io.BytesIO], object], alt: str) -> str:
    """A figure drawn into memory by ``draw(buffer)`` (PNG), inlined."""
    buf = io.BytesIO()
    draw(buf)
    return _img(buf.getvalue(), "image/png", alt)


def _guarded(make: Callable[[], str]) -> str:
    """A section's HTML, or the one-line reason it cannot be drawn (data not installed, a damaged
    or foreign checkpoint, an unreadable image)."""
    try:
        return make()
    except (DataError, CheckpointError, ValueError, OSError) as e:
        return _missing(f"could not draw this: {e}")


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _page(title: str, folder: Path, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in sections)
    stamp = f"{html.escape(str(folder.resolve()))}, written {datetime.now():%Y-%m-%d %H:%M:%S}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><h1>{html.escape(title)}</h1><p class="caption">{stamp}</p>{body}</body></html>\n'
    )
