"""The visual report rendered in a real headless browser (Debian's chromium): every panel draws.

The page's own script marks each panel ``data-drawn="1"`` once the browser has laid out its SVG with a
non-empty box; the counts per panel kind are checked against what the model needs (``expected_panels``).
Skipped where chromium is not installed (``apt-get install chromium``; ``.ci/run`` tries).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import converter
from tests.fixture_index import one_form_each
from tests.report_models import expected_panels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): the report is not rendered"
)
NAMES = ["tutorial", "gru_reset_after", "simple_rnn", "bidi_concat", "rnn_stacked_mixed", "masked_lstm", "shared_lstm"]


def render(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after chromium has loaded it and run its script (no network, a fresh profile)."""
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("keras", ["3", "2"])
@pytest.mark.parametrize("name", NAMES)
def test_every_panel_draws_in_chromium(name, keras, tmp_path) -> None:
    fx = next(f for f in one_form_each() if f.name == name and f.keras == keras)
    page = converter.report(fx.path, tmp_path / "report.html", config=fx.config)
    dom = render(page, tmp_path / "profile")
    want = expected_panels(converter.load(fx.path, fx.config).ir)
    figures = re.findall(r"<figure ([^>]*)>", dom)
    kinds = [re.search(r'data-panel="(\w+)"', f)[1] for f in figures]
    drawn = [re.search(r'data-panel="(\w+)"', f)[1] for f in figures if 'data-drawn="1"' in f]
    assert {k: kinds.count(k) for k in want} == want
    assert {k: drawn.count(k) for k in want} == want, "some panels did not draw"
    total = sum(want.values())
    assert f'data-panels-drawn="{total}/{total}"' in dom
    graph = re.search(r'<svg class="graph"[^>]*data-nodes="(\d+)" data-edges="(\d+)"', dom)
    model = converter.load(fx.path, fx.config).ir
    assert int(graph[1]) == len(model.inputs) + len(model.nodes)
    assert len(re.findall(r'<line class="edge"', dom)) == int(graph[2]) > 0
