"""Headless Chromium driven through the DevTools protocol, for the tests of the offline pages
(the explorer page and report.html): open a page, evaluate JavaScript in it, read its console
errors and the requests it made, take a screenshot.

`chromium(tmp_path)` starts the browser and yields a `DevTools` client; it skips the test where
no Chromium is installed, unless the CI variable is set (then it fails: in CI these tests must run).
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class DevTools:
    """The smallest Chrome DevTools protocol client: send a command, wait for its answer, keep events."""

    def __init__(self, url):
        import websocket

        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id, self.events = 0, []

    def __call__(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression):
        return self("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, path: Path, width: int, height: int, timeout: float = 30) -> None:
        """Show the file `path` in a window of `width` x `height` CSS pixels and wait until it has loaded."""
        self("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{path} did not finish loading"
            time.sleep(0.05)

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the window, written to `path` and, when ATTNLAB_SCREENSHOT_DIR is set, there too."""
        shot = base64.b64decode(self("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(shot)
        if os.environ.get("ATTNLAB_SCREENSHOT_DIR"):
            target = Path(os.environ["ATTNLAB_SCREENSHOT_DIR"])
            target.mkdir(parents=True, exist_ok=True)
            (target / path.name).write_bytes(shot)
        return shot

    def requested(self) -> list[str]:
        """The URLs of every request the pages made so far (Network must be enabled)."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries seen so far
        (Runtime and Log must be enabled)."""
        errors = [e["params"]["exceptionDetails"].get("text", "") + str(e["params"]["exceptionDetails"].get("exception", ""))
                  for e in self.events if e.get("method") == "Runtime.exceptionThrown"]
        errors += [str(e["params"].get("args")) for e in self.events
                   if e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert")]
        errors += [e["params"]["entry"].get("text") for e in self.events
                   if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
        return errors


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chromium(tmp_path: Path, width: int = 1300, height: int = 1000):
    """A headless Chromium on a blank page (its profile under `tmp_path`), as a `DevTools` client."""
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no chromium is installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    port = _free_port()
    proc = subprocess.Popen([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
                             f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as answer:
                    targets = [t for t in json.load(answer) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"chromium did not open its DevTools port (exit code {proc.poll()})")
            time.sleep(0.2)
        client = DevTools(targets[0]["webSocketDebuggerUrl"])
        yield client
        client.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
