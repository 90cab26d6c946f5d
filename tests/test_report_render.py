"""The HTML report renders in a real browser: headless Chromium draws every plot, with nonzero size,
and the plots of results with predictions draw error bars and the baseline line.

The test finds Chromium (``$NLUFORGE_CHROMIUM`` or on PATH); `make browser` installs Debian's
``chromium`` (.ci/run calls it). Without a browser it skips and says how to get one. It leaves a
screenshot of the whole page for people to look at: its path is printed, and a copy is written to
/tmp/nluforge_report_screenshot.png.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nluforge.report import build_report

FIXTURES = Path(__file__).parent / "fixtures" / "results"
NOISE = Path(__file__).parent / "fixtures" / "noise"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SCREENSHOT_COPY = Path("/tmp/nluforge_report_screenshot.png")
WIDTH = 1360

# Appended to a copy of the page: measures every plot and the page, and writes the numbers into the DOM,
# where --dump-dom shows them. getBoundingClientRect forces layout, so the sizes are the rendered ones.
PROBE = """<script>
(function () {
  var plots = Array.prototype.map.call(document.querySelectorAll("figure.plot svg"), function (svg) {
    var r = svg.getBoundingClientRect();
    var size = function (sel) {
      return Array.prototype.map.call(svg.querySelectorAll(sel), function (el) {
        var b = el.getBoundingClientRect(); return [b.width, b.height];
      });
    };
    return {w: r.width, h: r.height, x: r.left + window.scrollX, y: r.top + window.scrollY,
            marks: svg.querySelectorAll("path, use").length, texts: svg.querySelectorAll("text").length,
            errorbars: size('[id*="-errorbar-"]'), baselines: size('[id$="-baseline-majority"]'),
            links: size('[id*="-derived-"]')};
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({plots: plots, height: document.documentElement.scrollHeight,
                                    tables: document.querySelectorAll("table").length});
  document.body.appendChild(out);
})();
</script>"""


def _find_browser() -> str | None:
    candidates = [os.environ.get("NLUFORGE_CHROMIUM")] + [shutil.which(name) for name in BROWSERS]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _no_browser() -> str:
    """Chromium comes from `make browser` (which .ci/run calls); a test never installs system packages."""
    pytest.skip("no Chromium found: run `make browser` (Debian's chromium), or set NLUFORGE_CHROMIUM")


@pytest.fixture(scope="module")
def chromium() -> str:
    return _find_browser() or _no_browser()


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
    ]
    proc = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _probe(browser: str, page: Path, tmp_path: Path) -> dict:
    """Load a copy of ``page`` with the probe script and read back what it measured."""
    probed = tmp_path / "probed.html"
    probed.write_text(
        page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = _run(
        browser, tmp_path / "profile", f"--window-size={WIDTH},1000", "--dump-dom", probed.as_uri()
    ).stdout
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    return json.loads(html.unescape(dom[start : dom.index("</pre>", start)]))


def _screenshot(browser: str, page: Path, height: int, tmp_path: Path) -> Path:
    shot = tmp_path / "report.png"
    _run(
        browser,
        tmp_path / "profile",
        f"--window-size={WIDTH},{height}",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    return shot


def _distinct_colours(pixels) -> int:
    rgb = (pixels[..., :3] * 255).round().astype("int64").reshape(-1, 3)
    return len({(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in rgb[::7]})


def test_plots_render_in_chromium(chromium, tmp_path):
    paths = build_report(FIXTURES, tmp_path / "report")
    measured = _probe(chromium, paths.html, tmp_path)
    assert measured["tables"] == 6
    assert len(measured["plots"]) == len(paths.plots) == 13
    for plot in measured["plots"]:
        assert plot["w"] > 300 and plot["h"] > 150, plot
        assert plot["marks"] > 10 and plot["texts"] > 5, plot

    height = min(int(measured["height"]) + 20, 16000)
    shot = _screenshot(chromium, paths.html, height, tmp_path)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"\nscreenshot of the report: {shot} (copy: {SCREENSHOT_COPY})")

    from matplotlib.image import imread

    pixels = imread(shot)  # (H, W, 4) floats in [0, 1]
    assert pixels.shape[:2] == (height, WIDTH)
    for plot in measured["plots"]:  # each plot's area on the screenshot is drawn, not blank
        x, y, w, h = (int(plot[k]) for k in ("x", "y", "w", "h"))
        area = pixels[y : y + h, x : x + w]
        assert area.size and area[..., :3].std() > 0.05, plot
        assert _distinct_colours(area) > 20, plot


def test_error_bars_and_baselines_render_in_chromium(chromium, tmp_path):
    """Every plot of a results dir with predictions draws its 95% error bars and the majority-class
    baseline as a line across the plot; the derived int8 run is joined to its parent by an arrow."""
    paths = build_report(NOISE / "clear", tmp_path / "report")
    measured = _probe(chromium, paths.html, tmp_path)
    assert len(measured["plots"]) == len(paths.plots) >= 8
    for plot in measured["plots"]:
        assert len(plot["baselines"]) == 1, plot
        width, _ = plot["baselines"][0]
        assert width > 0.6 * plot["w"], plot  # a horizontal line across the axes
        assert len(plot["errorbars"]) >= 2, plot
        assert all(h > 3 for _, h in plot["errorbars"]), plot  # vertical bars with a visible length
    assert sum(len(plot["links"]) for plot in measured["plots"]) >= 3  # params, memory, latency, sizes
