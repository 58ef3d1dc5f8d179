"""Open a dashboard in headless Chromium: the rendered DOM, the JavaScript errors and a screenshot.

Uses the `chromium` binary (Debian's package; install it with
`apt-get install -y chromium`). Each run gets a fresh profile folder and
the flags that keep Chromium off the network, so it works on an offline
machine. JavaScript errors are read from two places: the page's own
#page-errors box, which `build_dashboard` fills from uncaught exceptions
and console.error, and the "Uncaught" console lines Chromium logs to stderr.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
# No sandbox because CI runs as root; the rest keep Chromium from reaching the network at start.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Virtual time lets the page's scripts finish before the DOM is dumped, without a wall-clock sleep.
VIRTUAL_TIME_BUDGET_MS = 20_000
TIMEOUT_S = 300
SCREENSHOT_WINDOW = (1400, 2000)

_TITLE = re.compile(r'<text class="gtitle"[^>]*>(.*?)</text>', re.S)
_PAGE_ERRORS = re.compile(r'<div id="page-errors"([^>]*)>(.*?)</div>', re.S)
_CONSOLE_UNCAUGHT = re.compile(r'CONSOLE[^\]]*\] "(Uncaught[^"]*)"')


@dataclass(frozen=True)
class RenderedPage:
    """The result of loading a page in headless Chromium: the DOM after load, figure titles as drawn, and JavaScript errors."""

    dom: str
    titles: tuple[str, ...]
    errors: tuple[str, ...]
    stderr: str


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _require_chromium() -> str:
    path = find_chromium()
    if path is None:
        raise FileNotFoundError(f"no Chromium binary on PATH (looked for {', '.join(CHROMIUM_NAMES)}); install it with `{INSTALL_HINT}`")
    return path


def _run(arguments: list[str], page: Path) -> subprocess.CompletedProcess:
    if not page.is_file():
        raise FileNotFoundError(f"page not found: {page}")
    with tempfile.TemporaryDirectory(prefix="hwsim-chromium-") as profile:
        command = [_require_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments, page.resolve().as_uri()]
        log.debug("running %s", " ".join(command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as error:
            raise TimeoutError(f"Chromium timed out after {TIMEOUT_S} s on {page}") from error
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"Chromium failed on {page} with exit status {result.returncode}: {' | '.join(tail)}")
    return result


def render(page: str | os.PathLike) -> RenderedPage:
    """Load `page` in headless Chromium and return the DOM after its scripts ran, the drawn titles and the JavaScript errors."""
    page = Path(page)
    result = _run(["--enable-logging=stderr", "--v=0", f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", "--dump-dom"], page)
    dom = result.stdout
    titles = tuple(html.unescape(re.sub(r"<[^>]+>", "", match)).strip() for match in _TITLE.findall(dom))
    errors = list(_CONSOLE_UNCAUGHT.findall(result.stderr))
    box = _PAGE_ERRORS.search(dom)
    if box and "hidden" not in box.group(1) and box.group(2).strip():
        errors.append(html.unescape(box.group(2).strip()))
    return RenderedPage(dom, titles, tuple(errors), result.stderr)


def screenshot(page: str | os.PathLike, png: str | os.PathLike, *, window: tuple[int, int] = SCREENSHOT_WINDOW) -> Path:
    """Save a PNG of the top `window` (width, height in CSS pixels) of `page` and return its path."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    width, height = window
    _run([f"--screenshot={png.resolve()}", f"--window-size={width},{height}", "--hide-scrollbars", f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"], Path(page))
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium exited without writing the screenshot {png}")
    return png
