"""A real headless browser for pages: Debian's Chromium, offline.

`./run test` installs Chromium when it is missing (`ensure_chromium` there).
Every external host is unresolvable to the browser, so a page that tried to
load anything from the network would render without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

OFFLINE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--mute-audio",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def chromium() -> str:
    """The Chromium binary, or a test failure saying how to install it."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: `./run test` installs it (apt-get install chromium), or install it "
                "yourself")


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        env = {**os.environ, "HOME": profile}
        return subprocess.run([chromium(), *OFFLINE_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, env=env)


def dump_dom(page: Path) -> str:
    """The page's DOM after Chromium has parsed and laid it out."""
    result = _run(["--dump-dom", page.resolve().as_uri()])
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400) -> Path:
    """A PNG of the first `height` pixels of the page at `width`."""
    result = _run([f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()])
    assert result.returncode == 0 and png.exists(), result.stderr[-2000:]
    return png
