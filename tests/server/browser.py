"""Debian's Chromium, headless, driven through ChromeDriver's W3C WebDriver protocol (JSON over HTTP on
loopback, spoken here with `requests`: no browser-automation package, no downloaded browser).

`require_browser()` is the one place that says what a missing browser means: outside CI the test
skips with the install command; in CI (CI=true) it fails, as .ci/run installs the browser.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server.pg import free_port

INSTALL_BROWSER = (
    "sudo apt-get install chromium chromium-driver (Debian/Ubuntu; ./scripts/setup.sh does it where it can)"
)
# No sandbox (root, containers), no GPU, and no connection of Chromium's own: this machine reaches
# nothing but loopback, and a browser that keeps calling home slows every page down.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
"""The W3C WebDriver key of an element reference."""


def find_browser() -> tuple[str, str] | None:
    """Chromium and ChromeDriver on PATH (Debian's: /usr/bin), as scripts/setup.sh looks for them."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, chromedriver) if chromium and chromedriver else None


def require_browser() -> None:
    if find_browser():
        return
    message = f"Chromium and ChromeDriver not found on PATH; install them: {INSTALL_BROWSER}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One Chromium (a new, empty profile) behind one ChromeDriver, both ended by `close`."""

    def __init__(self) -> None:
        found = find_browser()
        if found is None:
            raise WebDriverError(f"Chromium and ChromeDriver not found on PATH: {INSTALL_BROWSER}")
        chromium, chromedriver = found
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        port = free_port()
        self._base = f"http://127.0.0.1:{port}"
        self._driver = subprocess.Popen(
            [chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
            options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}"]}
            capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
            session = self._call("POST", "/session", {"capabilities": capabilities})
            self._session = f"/session/{session['sessionId']}"
        except BaseException:
            self._stop_driver()
            raise

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self._base}/status", timeout=2).json()["value"]["ready"]:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            if self._driver.poll() is not None:
                break
            time.sleep(0.1)
        raise WebDriverError(f"ChromeDriver did not start (exit {self._driver.poll()})")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, self._base + path, json=body, timeout=120)
        value = response.json()["value"]
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:300]}")
        return value

    # --- what a test does with it --------------------------------------------------------------

    def open(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """`script` is a function body run in the page (`arguments` are `args`); returns its value."""
        return self._call("POST", f"{self._session}/execute/sync", {"script": script, "args": list(args)})

    def text(self) -> str:
        """What the page shows a person: the rendered text of its body."""
        return str(self.run("return document.body ? document.body.innerText : '';"))

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """The page's text once `condition` holds for it; AssertionError naming `what` if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text()
            if condition(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what} within {timeout} s; it shows:\n{shown[:2000]}")
            time.sleep(0.25)

    def click(self, xpath: str, timeout: float = 60) -> None:
        """Clicks (pointer events, as a person would) the first element `xpath` finds, once it is shown."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                element = self._call("POST", f"{self._session}/element", {"using": "xpath", "value": xpath})
                self._call("POST", f"{self._session}/element/{element[ELEMENT]}/click", {})
                return
            except WebDriverError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing to click at {xpath} within {timeout} s: {e}") from e
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"{self._session}/screenshot")))

    def close(self) -> None:
        try:
            if hasattr(self, "_session"):
                self._call("DELETE", self._session)
        finally:
            self._stop_driver()

    def _stop_driver(self) -> None:
        self._driver.terminate()
        try:
            self._driver.wait(10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
