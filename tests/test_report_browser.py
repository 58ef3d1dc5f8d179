"""The dashboard in headless Chromium: no JavaScript errors, every figure title drawn, and a screenshot.

Needs Debian's Chromium: `apt-get update && apt-get install -y chromium`.
The screenshot stays in pytest's temporary folder (pytest keeps the last
three runs' folders), named in the test's output.
"""

from __future__ import annotations

import struct

import pytest

from test_report_dashboard import ALL_FIGURES, all_tables

from hwsim.report import build_dashboard
from hwsim.report.browser import INSTALL_HINT, find_chromium, render, screenshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason=f"Chromium is not installed; install it with `{INSTALL_HINT}`"),
]

# Start of each figure's title, in page order.
EXPECTED_TITLES = (
    "Pareto front: SQNR (dB) against bits per element (bits)",
    "Roofline: attained FLOP/s against FLOP per DRAM byte (log-log)",
    "Energy by component per accelerator / policy (",
    "Latency per phase (",
    "Bits per element by layer and tensor (bits, scales and zero points included)",
    "Representable values of each element format (value / largest finite value",
    "qdq error per format on encoder.layer.0.attention.self.query.weight",
    "Accumulation error against K, relative to the exact product of the quantized operands",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    dashboard = build_dashboard(all_tables(), path, title="Browser test dashboard", inputs={"model": "smollm2-135m"})
    assert dashboard.figures == ALL_FIGURES
    return path


def test_page_renders_without_errors(page):
    rendered = render(page)

    assert rendered.errors == ()
    assert len(rendered.titles) == len(EXPECTED_TITLES)
    for title, expected in zip(rendered.titles, EXPECTED_TITLES):
        assert title.startswith(expected)
    # Subplot titles are drawn too: the heat map's policy panels.
    assert ">policy: w4a16-edge8<" in rendered.dom


def test_render_reports_javascript_errors(page, tmp_path):
    broken = tmp_path / "broken.html"
    text = page.read_text(encoding="utf-8")
    broken.write_text(text.replace("</body>", "<script>throw new Error('deliberate test error');</script></body>"), encoding="utf-8")

    rendered = render(broken)

    assert any("deliberate test error" in error for error in rendered.errors)
    # The page's own error box shows the message to a reader.
    assert "JavaScript errors on this page: " in rendered.dom


def test_render_reports_console_errors(page, tmp_path):
    broken = tmp_path / "console.html"
    text = page.read_text(encoding="utf-8")
    broken.write_text(text.replace("</body>", "<script>console.error('figure data missing');</script></body>"), encoding="utf-8")

    rendered = render(broken)

    assert rendered.errors == ("JavaScript errors on this page: figure data missing",)


def test_screenshot(page, tmp_path):
    png = screenshot(page, tmp_path / "dashboard.png", window=(1400, 2000))

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 2000)
    # A blank page compresses to a few kB; seven figures do not.
    assert len(data) > 100_000
    print(f"screenshot: {png}")
