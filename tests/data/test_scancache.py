"""data/scancache.py and the cached scan of data/folder.py: a second scan decodes nothing, a file
changed since is scanned again, a damaged or unwritable cache is ignored, and the verdicts are
those of an uncached scan (the reference) every time."""

from __future__ import annotations

import json
import os

import pytest

from alexnet.data import build_data
from alexnet.data import folder as folder_module
from alexnet.data.folder import scan_folder, scan_images
from alexnet.data.scancache import cache_dir

from helpers import CPU, FIXED_STATS, _cfg, make_folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ALEXNET_CACHE", str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch):
    """The paths the scan decodes (workers=0: in this process)."""
    opened = []
    real = folder_module.open_image

    def counting(path, *args, **kw):
        opened.append(str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(folder_module, "open_image", counting)
    return opened


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    make_folder(root)
    samples, _ = scan_folder(root)
    return root, samples


def test_a_second_scan_decodes_nothing_and_agrees_with_an_uncached_scan(cache, decodes, folder):
    root, samples = folder
    reference = scan_images(samples, "RGB", 0, cache=False)
    assert len(decodes) == len(samples) and len(reference) == 5
    decodes.clear()
    assert scan_images(samples, "RGB", 0) == reference
    assert sorted(decodes) == sorted(p for p, _ in samples)
    decodes.clear()
    assert scan_images(samples, "RGB", 0) == reference
    assert decodes == []
    # a subset (evaluation's val/ alone, a hold-out) finds the same verdicts
    assert scan_images(samples[:3], "RGB", 0) == [b for b in reference if b["path"] in {p for p, _ in samples[:3]}]
    assert decodes == []
    # stored in the cache folder, nothing written into the data folder
    assert list((cache / "scan").glob("*.json")) and not list(root.rglob("*.json"))


def test_a_parallel_scan_fills_the_cache_too(cache, decodes, folder):
    _, samples = folder
    reference = scan_images(samples, "RGB", 2)  # decoded in two worker processes
    assert decodes == []
    assert scan_images(samples, "RGB", 0) == reference and decodes == []


def test_a_file_changed_since_is_scanned_again(cache, decodes, folder):
    root, samples = folder
    scan_images(samples, "RGB", 0)
    good = str(root / "a" / "good0.jpg")
    bad = str(root / "a" / "truncated.jpg")
    decodes.clear()
    # same size, new mtime: decoded again, still good
    st = os.stat(good)
    os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert good not in {b["path"] for b in scan_images(samples, "RGB", 0)}
    assert decodes == [good]
    decodes.clear()
    # a good file cut short (new size) is now bad; a bad file replaced by a good one is now good
    with open(good, "r+b") as f:
        f.truncate(100)
    (root / "a" / "truncated.jpg").write_bytes((root / "a" / "good2.jpg").read_bytes())
    result = {b["path"] for b in scan_images(samples, "RGB", 0)}
    assert sorted(decodes) == sorted([good, bad])
    assert good in result and bad not in result
    assert result == {b["path"] for b in scan_images(samples, "RGB", 0, cache=False)}


def test_a_damaged_cache_is_ignored_and_rewritten(cache, decodes, folder):
    _, samples = folder
    reference = scan_images(samples, "RGB", 0)
    files = sorted((cache / "scan").glob("*.json"))
    damage = [b"\x00garbage{", b'{"version": 1, "dir": "/elsewhere", "files": {}}', b'{"version": 1, "files": []}']
    for i, f in enumerate(files):
        f.write_bytes(damage[i % len(damage)])
    # entries of the wrong shape (a string size, a list verdict) are dropped one by one
    first = json.loads(
        json.dumps(
            {
                "version": 1,
                "dir": str(folder[0] / "a"),
                "files": {"good0.jpg": ["1", 2, None], "good1.png": [1, 2, [3]]},
            }
        )
    )
    files[0].write_text(json.dumps(first))
    decodes.clear()
    assert scan_images(samples, "RGB", 0) == reference
    assert len(decodes) == len(samples)
    for f in files:  # whole JSON again
        assert isinstance(json.loads(f.read_text()), dict)
    decodes.clear()
    assert scan_images(samples, "RGB", 0) == reference and decodes == []


def test_a_cache_that_cannot_be_written_is_ignored(tmp_path, monkeypatch, decodes, folder):
    _, samples = folder
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("ALEXNET_CACHE", str(blocker))
    reference = scan_images(samples, "RGB", 0, cache=False)
    assert scan_images(samples, "RGB", 0) == reference
    assert scan_images(samples, "RGB", 0) == reference
    assert len(decodes) == 3 * len(samples)  # nothing could be kept, nothing went wrong


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ALEXNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "alexnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "alexnet"


def test_a_resumed_run_on_the_same_folder_starts_without_decoding(cache, decodes, tmp_path):
    root = tmp_path / "good"
    make_folder(root, bad=False)
    first = build_data(_cfg(root), CPU, stats=FIXED_STATS)
    assert decodes
    decodes.clear()
    again = build_data(_cfg(root), CPU, stats=FIXED_STATS)  # what --resume builds: stored statistics
    assert decodes == []
    assert again.split == first.split and again.num_train == first.num_train
