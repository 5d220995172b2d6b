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

import html
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from alexnet.analysis.reporthtml import GENERATOR, figure, html_table, img, json_html, markdown_html, missing, page
from alexnet.errors import CheckpointError, ConfigError, DataError
from alexnet.formats import atomic_write
from alexnet.plots import plot_confusion, plot_curves
from alexnet.ranges import is_number
from alexnet.system.files import check_regular, read_bytes, read_json
from alexnet.training.rundir import RunFolder, read_metrics

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
MAX_INLINE_BYTES = 32 << 20  # the largest file put into the page (figures are a few hundred kB)


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
    if os.path.lexists(out) and not _written_here(out):
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
    atomic_write(out, lambda tmp: tmp.write_text(page(f"alexnet report: {folder.resolve().name}", folder, sections)))
    return out


# --------------------------------------------------------------------------------------------
# A run folder


def _written_here(out: Path) -> bool:
    """Whether ``out`` is a page this command wrote (a regular file whose head carries GENERATOR):
    only those are replaced; a device or a pipe (``--out /dev/stdout``) never is, nor read."""
    try:
        with open(out, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as f:
            return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and GENERATOR.encode() in f.read(2000)
    except OSError:
        return False


def _run_sections(run: RunFolder, device: str, train_images: int) -> list[tuple[str, str]]:
    sections = [("Settings", _settings_html(run))]
    if os.path.lexists(run.metrics_file):

        def curves() -> str:
            check_regular(run.metrics_file, inside=run.path)
            rows = read_metrics(run.metrics_file)
            return figure(lambda buf: plot_curves(rows, buf), "learning curves") + _metrics_table(rows)

        sections.append(("Learning curves", _guarded(curves)))
    else:
        sections.append(
            ("Learning curves", missing(f"no {run.metrics_file.name} yet: the run has not finished an epoch"))
        )
    checkpoint = run.best if run.best.is_file() else run.last
    if not checkpoint.is_file():
        note = missing(
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
                    figure(lambda buf: visualize.visualize_filters(checkpoint, buf), "conv1 filters")
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
                    figure(
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
        picture = figure(
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
    if os.path.lexists(command):
        try:
            text = read_bytes(command, limit=MAX_INLINE_BYTES, inside=run.path).decode(errors="replace")
            parts.append("<h3>Command</h3><pre>" + html.escape(text.strip()) + "</pre>")
        except DataError as e:
            parts.append(missing(str(e)))
    for name, title in (("config.json", "Resolved settings"), ("env.json", "Environment")):
        path = run.path / name
        if not os.path.lexists(path):
            parts.append(missing(f"no {name} in the folder"))
            continue
        try:
            value = read_json(path, limit=MAX_INLINE_BYTES, inside=run.path)
        except DataError as e:
            parts.append(missing(str(e)))
            continue
        parts.append(f"<h3>{title} ({name})</h3>" + json_html(value))
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
        result, whence = _evaluation(saved, run.path), f"from {saved.name} (alexnet evaluate)"
    else:
        from alexnet.inference.evaluate import evaluate_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            result, whence = evaluate_checkpoint(checkpoint, device=device, out=tmp), "evaluated for this page"
    summary = (
        f"<p>top-1 accuracy <b>{result['top1']:.2%}</b>, top-5 <b>{result['top5']:.2%}</b> on {result['images']:,} "
        "images "
        f"of {html.escape(str(result['data']))} ({whence}).</p>"
    )
    return summary + figure(lambda buf: plot_confusion(result["confusion"], result["classes"], buf), "confusion matrix")


def _evaluation(path: Path, folder: Path) -> dict:
    """``evaluation.json`` as ``alexnet evaluate`` wrote it, the fields the page shows checked."""
    result = read_json(path, limit=MAX_INLINE_BYTES, inside=folder)
    classes = result.get("classes") if isinstance(result, dict) else None
    if not (
        isinstance(classes, list)
        and all(isinstance(c, str) for c in classes)
        and all(is_number(result.get(k)) for k in ("top1", "top5", "images"))
        and isinstance(result.get("confusion"), list)
        and len(result["confusion"]) == len(classes)
        and all(
            isinstance(row, list) and len(row) == len(classes) and all(is_number(v) for v in row)
            for row in result["confusion"]
        )
    ):
        raise DataError(
            f"{path}: not an evaluation record of alexnet evaluate (top1, top5, images, classes, confusion)"
        )
    return result


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
        try:  # a regular file inside the folder: never a link out of it, a device or a pipe
            suffix = path.suffix.lower()
            if suffix == ".json":
                body = json_html(read_json(path, limit=MAX_INLINE_BYTES, inside=folder))
            else:
                data = read_bytes(path, limit=MAX_INLINE_BYTES, inside=folder)
                if suffix == ".md":
                    body = markdown_html(data.decode(errors="replace"))
                else:
                    body = img(data, "image/png" if suffix == ".png" else "image/svg+xml", path.name)
        except DataError as e:
            body = missing(str(e))
        parts.append(f"<h3>{name}</h3>{body}")
    return "".join(parts)


def _runs_table(runs: list[Path]) -> str:
    """One line per run folder: its model, input size, epochs and accuracy, from its own files."""
    rows = []
    for path in runs:
        try:
            cfg = read_json(path / "config.json", limit=MAX_INLINE_BYTES, inside=path.parent)
            if not isinstance(cfg, dict):
                raise DataError(f"{path / 'config.json'}: not an object of settings")
            metrics = read_metrics(path / "metrics.jsonl") if os.path.lexists(path / "metrics.jsonl") else []
        except DataError as e:
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
    return html_table(["run", "model", "image size", "epochs done", "last val top-1", "best val top-1"], rows)


def _guarded(make: Callable[[], str]) -> str:
    """A section's HTML, or the one-line reason it cannot be drawn (data not installed, a damaged
    or foreign checkpoint, an unreadable image)."""
    try:
        return make()
    except (DataError, CheckpointError, ValueError, OSError) as e:
        return missing(f"could not draw this: {e}")
