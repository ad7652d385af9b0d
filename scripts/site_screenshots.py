"""Screenshots of the leaderboard site for the docs: ``docs/screenshots/{index,table,gallery}.png``.

Usage::

    python scripts/site_screenshots.py [--submissions submissions] [--out docs/screenshots]

The site is built from the submissions folder (``gibench.leaderboard.build.build_site`` with ``skip_invalid``, so a
rejected folder shows up in the rejected box instead of stopping the build) into a temporary folder, opened from
``file://`` in the system Chromium (Debian's ``chromium`` package, found on ``PATH``) through Playwright for Python
with ``executable_path`` — Playwright's own browser download is never used — and photographed at a 1400 × 900
viewport (the visible part of the page, not the full scroll height), after every image has loaded. The table page
is the first one the index links to (``a.table-page``): ``table.png`` is its top (the table), ``gallery.png`` the
same page scrolled to its saliency gallery (``section#gallery``, when it has one). A PNG over 300 kB is re-encoded
with a 256-colour palette, which keeps text sharp.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = ["MAX_BYTES", "VIEWPORT", "first_table", "main", "screenshots"]

VIEWPORT = {"width": 1400, "height": 900}
MAX_BYTES = 300_000
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--disable-extensions"]


class _TableLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "a" and "table-page" in (attrs.get("class") or "").split() and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def first_table(index: Path) -> Path:
    """The first table page the index links to, or SystemExit when the site has no table."""
    parser = _TableLinks()
    parser.feed(index.read_text(encoding="utf-8"))
    if not parser.hrefs:
        raise SystemExit(f"{index} links to no table page (no a.table-page): are there any valid submissions?")
    return (index.parent / parser.hrefs[0].split("#")[0]).resolve()


def _small_png(data: bytes) -> bytes:
    if len(data) <= MAX_BYTES:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def screenshots(index: Path, out_dir: Path, browser: Any = None) -> list[Path]:
    """Photograph ``index`` and its first table page into ``out_dir/index.png``, ``table.png`` and ``gallery.png``.

    ``browser``: a Playwright browser to use (default: launch the system Chromium for these two pictures).
    """
    if browser is None:
        with _system_chromium() as launched:
            return screenshots(index, out_dir, launched)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(index.resolve().as_uri())
        written = [_shoot(page, out_dir / "index.png")]
        page.goto(first_table(index).as_uri())
        written.append(_shoot(page, out_dir / "table.png"))
        gallery = page.locator("section#gallery")
        if gallery.count():
            gallery.evaluate("section => section.scrollIntoView({block: 'start'})")
            written.append(_shoot(page, out_dir / "gallery.png"))
    finally:
        page.close()
    return written


def _shoot(page: Any, target: Path) -> Path:
    """The viewport as a PNG at ``target``, once every image on the page has loaded (lazy ones included)."""
    page.wait_for_load_state("load")
    page.evaluate("""() => Promise.all(Array.from(document.images, img => {
        img.loading = 'eager';
        return img.decode().catch(() => null);
    }))""")
    target.write_bytes(_small_png(page.screenshot(type="png")))
    return target


@contextlib.contextmanager
def _system_chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("No system Chromium on PATH. Install it with `apt-get install -y chromium`.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=Path, default=Path("submissions"), help="the submissions folder")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="where the PNGs are written")
    args = parser.parse_args(argv)
    from gibench.core.errors import GibenchError
    from gibench.leaderboard.build import build_site

    with tempfile.TemporaryDirectory(prefix="gibench-site-") as tmp:
        try:
            index = build_site(args.submissions, Path(tmp) / "site", skip_invalid=True)
        except GibenchError as exc:
            raise SystemExit(str(exc)) from None
        for path in screenshots(index, args.out):
            print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
