"""The report page in a real browser: headless Chromium renders it, takes a screenshot, no console errors.

Skipped (with the reason) only where no Chromium binary is installed; CI installs Debian's ``chromium``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import pytest

from harness.report import render
from test_report import fixture_tree  # noqa: F401  (pytest fixture)

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium binary on PATH (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def chromium(page: Path, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local file with a throw-away profile."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)


def console_problems(stderr: str) -> list[str]:
    """Console messages (the page logs none, so any is a problem) and uncaught errors."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def test_console_check_catches_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert console_problems(chromium(bad, "--dump-dom").stderr)      # the check itself can fail


def test_report_renders_in_chromium(fixture_tree, tmp_path):
    cfg, results, data, models = fixture_tree
    page = render.run(cfg, results, data, results / "report" / "index.html")
    dom = chromium(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_problems(dom.stderr) == []
    html = dom.stdout
    body = re.search(r"<body([^>]*)>", html).group(1)
    assert 'data-broken-images="0"' in body, body                    # every data: URI image decoded
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) >= 4
    assert int(re.search(r'data-tables="(\d+)"', body).group(1)) >= 14
    for cls in ("table1", "ablation", "classic", "complexity", "erf", "codecs", "bench", "versions"):
        assert f'<table class="{cls}"' in html, cls
    assert "SMOKE PROFILE — not paper figures" in html

    shot = tmp_path / "report.png"
    res = chromium(page, f"--screenshot={shot}", "--window-size=1400,3000", "--hide-scrollbars")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert console_problems(res.stderr) == []
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (3000, 1400)
    assert float(img.std()) > 10                                       # not a blank page
    if os.environ.get("CSRBENCH_SCREENSHOT"):                          # keep a copy to look at
        shutil.copy(shot, os.environ["CSRBENCH_SCREENSHOT"])
