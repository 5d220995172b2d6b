"""report.py: one self-contained page per run or experiment folder - every image inlined, nothing
fetched from anywhere, nothing else in the folder touched; missing pieces said on the page; the
page opened in Debian's headless Chromium shows every image."""

from __future__ import annotations

import base64
import io
import os
import shutil
from html.parser import HTMLParser

import pytest
from PIL import Image

from alexnet.analysis.report import write_report

from helpers import _main, _one_line_error


class _Links(HTMLParser):
    """Every src and href of a page, and its <img> tags."""

    def __init__(self):
        super().__init__()
        self.refs, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [
            (tag, k, v) for k, v in attrs.items() if k in ("src", "href", "srcset", "action", "poster", "data")
        ]
        if tag == "img":
            self.images.append(attrs)


def _links(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_a_run_page_inlines_every_figure_and_refers_to_nothing(trained_run, tmp_path, capsys):
    before = _snapshot(trained_run)
    code, out, err = _main(capsys, "report", str(trained_run), "--train-images", "100")
    assert code == 0, err
    page_path = trained_run / "report.html"
    assert out.strip() == f"wrote {page_path}"
    after = _snapshot(trained_run)
    assert {k: v for k, v in after.items() if k != "report.html"} == before  # nothing else written or touched

    page = page_path.read_text()
    links = _links(page)
    assert all(
        kind == "img" and attr == "src" and value.startswith("data:image/png;base64,")
        for kind, attr, value in links.refs
    ), links.refs
    assert "url(" not in page and "@import" not in page  # the style sheet fetches nothing either
    alts = [img["alt"] for img in links.images]
    assert alts == [
        "learning curves",
        "confusion matrix",
        "conv1 filters",
        "test images and their top-5",
        "nearest training images in FC7 space",
    ]
    for img in links.images:  # each is a whole PNG
        Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).verify()
    for words in (
        "Resolved settings",
        "image_size",
        "val top-1",
        "top-1 accuracy",
        "searched over 100 training images",
        "Environment",
    ):
        assert words in page, words
    assert "could not draw" not in page and "no checkpoint yet" not in page

    # run again: its own page is replaced; a file it did not write is not
    assert _main(capsys, "report", str(trained_run), "--train-images", "10")[0] == 0
    foreign = tmp_path / "mine.html"
    foreign.write_text("<p>my notes</p>")
    code, _, err = _main(capsys, "report", str(trained_run), "--out", str(foreign))
    assert code == 2 and str(foreign) in _one_line_error(err)
    assert foreign.read_text() == "<p>my notes</p>"


def test_a_run_without_a_checkpoint_says_so(trained_run, tmp_path):
    run = tmp_path / "young"
    run.mkdir()
    for name in ("config.json", "command.txt"):  # started, not one epoch finished
        shutil.copy(trained_run / name, run / name)
    page = write_report(run).read_text()
    assert "no metrics.jsonl yet" in page and "no checkpoint yet" in page
    assert "<img" not in page


def test_an_experiment_folder_shows_its_tables_figures_and_runs(trained_run, tmp_path):
    folder = tmp_path / "lrn-ablation"
    folder.mkdir()
    (folder / "table.md").write_text(
        "# LRN ablation\n\nTwo runs.\n\n| run | top-1 |\n|---|---:|\n| lrn | 91.20% |\n| no-lrn | 90.10% |\n"
    )
    (folder / "table.json").write_text('[{"run": "lrn", "top1": 0.912}, {"run": "no-lrn", "top1": 0.901}]')
    (folder / "accuracy.png").write_bytes(_png((200, 30, 30)))
    (folder / "figures").mkdir()
    (folder / "figures" / "curves.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10"><rect width="20" height="10"/></svg>'
    )
    shutil.copytree(trained_run, folder / "lrn", ignore=shutil.ignore_patterns("checkpoints", "tb", "*.html", "*.png"))
    shutil.copytree(
        trained_run, folder / "no-lrn", ignore=shutil.ignore_patterns("checkpoints", "tb", "*.html", "*.png")
    )

    page = write_report(folder).read_text()
    links = _links(page)
    assert sorted(img["alt"] for img in links.images) == ["accuracy.png", "curves.svg"]
    assert all(v.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for _, _, v in links.refs)
    assert "<td>no-lrn</td>" in page and "<td>90.10%</td>" in page  # the Markdown table
    assert "<th>top1</th>" in page and "0.901" in page  # the results JSON
    # each run's model as its config.json names it (trained_run's: the test-size network)
    row = "<td>no-lrn</td><td>alexnet_tiny</td><td>67</td><td>1 / 1</td>"
    assert "<h2>Runs in this folder</h2>" in page and row in page
    assert (
        "lrn/config.json" not in page and "<td>lrn</td><td>alexnet_tiny</td>" in page
    )  # runs inside are summarised, not listed file by file


def test_a_folder_that_is_neither_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here\n")
    for folder in (tmp_path, tmp_path / "missing"):
        code, _, err = _main(capsys, "report", str(folder))
        assert code == 1 and str(folder) in _one_line_error(err)
    assert not (tmp_path / "report.html").exists()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.slow
def test_the_page_shows_every_image_in_headless_chromium(trained_run, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (scripts/ensure-browser.sh installs them as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By

    page = write_report(trained_run, tmp_path / "report.html", train_images=100)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--window-size=1100,900",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 5
        for img in images:
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0, (
                img.get_attribute("alt")
            )
        assert driver.title == f"alexnet report: {trained_run.name}"
        if os.environ.get("ALEXNET_REPORT_SCREENSHOT"):
            driver.save_screenshot(os.environ["ALEXNET_REPORT_SCREENSHOT"])
    finally:
        driver.quit()


def test_the_page_inlines_only_regular_files_inside_its_folder(tmp_path, capsys):
    """Before: a link to a system file was inlined into a page meant to be shared, a link to
    /dev/zero ate memory, a FIFO hung the command, and so did a FIFO (or /dev/stdout) as --out."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "table.md").write_text("| run | top-1 |\n|---|---|\n| a | 90% |\n")
    (tmp_path / "secret.md").write_text("the host's own file\n")
    (folder / "leak.md").symlink_to(tmp_path / "secret.md")
    (folder / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.json")
    page = write_report(folder).read_text()
    assert "<td>90%</td>" in page and "own file" not in page
    assert "leak.md: a link to a file outside" in page and "zero.png: a link to a file outside" in page
    assert "pipe.json: not a regular file but a named pipe" in page
    os.mkfifo(tmp_path / "out.html")
    code, _, err = _main(capsys, "report", str(folder), "--out", str(tmp_path / "out.html"))
    assert code == 2 and "was not written by alexnet report" in _one_line_error(err)


def test_damaged_run_files_are_said_on_the_page(tmp_path):
    """Before: tracebacks from a config.json nested 100,000 deep, metrics lines that are not
    records, an env.json that is a list, and a run inside whose settings are not an object."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    (run / "env.json").write_text("[1, 2]")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 1.0}\n[1]\n')
    page = write_report(run).read_text()
    assert "config.json: JSON nested more than 100 levels deep" in page
    assert "metrics.jsonl line 1: not an epoch record" in page
    folder = tmp_path / "experiment"
    (folder / "arm-seed0").mkdir(parents=True)
    (folder / "arm-seed0" / "config.json").write_text('["not", "settings"]')
    (folder / "arm-seed1").mkdir()
    (folder / "arm-seed1" / "config.json").write_text('{"model": "alexnet", "epochs": 1}')
    (folder / "arm-seed1" / "metrics.jsonl").write_text('{"epoch": "zero"}\n')
    page = write_report(folder).read_text()
    assert "not an object of settings" in page and "metrics.jsonl line 1: not an epoch record" in page
