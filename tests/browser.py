"""Headless Chromium for the page tests: what a person sees, not the file's source.

Debian's ``chromium`` (``make test`` installs it; a missing browser FAILS the test, it is
never a skip) renders a page three ways:

- :func:`dump_dom`: the DOM after the page's JavaScript ran (``--dump-dom``), parsed by
  :func:`parse_dom` into :class:`Node` elements to query;
- :func:`screenshot`: the pixels (``--screenshot --window-size``), as an RGB array;
- :func:`open_page`: a live page over the DevTools protocol on a pipe (no port, no
  websocket library): evaluate an expression in it (has an image decoded, where is it
  laid out), move the mouse, the list of every request the page made and every error
  its console showed.

``offline=True`` cuts the browser off the network: every connection goes to a proxy on a
closed port and every host name fails to resolve (``127.0.0.1`` is kept reachable when
the page is served from this machine), so a page that needs anything from outside shows
it. ``--hide-scrollbars`` keeps the layout width equal to the window width in all three,
so positions measured in a live page hold in a screenshot of the same width.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1600, 1000)  # width, height in CSS pixels (device scale factor 1)
# Copies of every screenshot land here when set, to look at them after a run.
SCREENSHOT_DIR_ENV = "ROPENOPE_SCREENSHOT_DIR"


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    return CHROMIUM


def offline_flags(loopback: bool = False) -> list[str]:
    """No request leaves the machine: a proxy that refuses every connection and a resolver
    that resolves nothing (but ``127.0.0.1`` when ``loopback``: a page served here, which
    Chromium also never sends through a proxy)."""
    rules = "MAP * ~NOTFOUND" + (", EXCLUDE 127.0.0.1" if loopback else "")
    return ["--proxy-server=127.0.0.1:1", f"--host-resolver-rules={rules}"]


def _flags(profile: Path, window: tuple[int, int], offline: bool, url: str) -> list[str]:
    flags = [
        str(chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
    ]
    if offline:
        flags += offline_flags(loopback=url.startswith("http://127.0.0.1"))
    return flags


def _run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def dump_dom(
    url: str,
    profile: Path,
    budget_ms: int = 5000,
    *,
    window: tuple[int, int] = WINDOW,
    offline: bool = False,
) -> str:
    """The page's DOM after its JavaScript ran for ``budget_ms`` of virtual time (virtual
    time stands still while a request is pending, so a page's data calls finish first)."""
    args = _flags(profile, window, offline, url)
    return _run([*args, f"--virtual-time-budget={budget_ms}", "--dump-dom", url]).stdout


def screenshot(
    url: str,
    path: Path,
    profile: Path,
    budget_ms: int = 5000,
    *,
    window: tuple[int, int] = WINDOW,
    offline: bool = False,
) -> np.ndarray:
    """The first ``window`` of the page as pixels (height, width, RGB), saved at ``path``
    (and copied to ``$ROPENOPE_SCREENSHOT_DIR`` when set)."""
    from PIL import Image

    args = _flags(profile, window, offline, url)
    _run([*args, f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url])
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2] == (window[1], window[0]), pixels.shape
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return pixels


# -- what the pixels show ---------------------------------------------------------------


def ink_fraction(pixels: np.ndarray) -> float:
    """The share of pixels that are not (near) white: 0 for a blank page."""
    return float((pixels.min(axis=-1) < 240).mean())


def distinct_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def colour_fraction(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 24) -> float:
    """The share of pixels within ``tolerance`` of ``rgb`` on every channel."""
    close = np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance
    return float(close.mean())


# -- the DOM as elements ----------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # text directly inside, in order
    flow: list[Node | str] = field(default_factory=list)  # children and text, in page order

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        """Elements named ``tag`` whose attributes include ``attrs`` (``class_`` for
        ``class``: one of the element's classes)."""
        want = {k.rstrip("_"): v for k, v in attrs.items()}
        out = []
        for node in self.iter():
            if node.tag != tag:
                continue
            ok = True
            for key, value in want.items():
                have = node.attrs.get(key)
                if key == "class":
                    ok = ok and have is not None and value in have.split()
                else:
                    ok = ok and have == value
            if ok:
                out.append(node)
        return out

    def text(self) -> str:
        """The text a person reads in this element (scripts and styles left out)."""
        if self.tag in ("script", "style"):
            return ""
        pieces = [p if isinstance(p, str) else p.text() for p in self.flow]
        return " ".join(" ".join(p.split()) for p in pieces if p.strip())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        self.stack[-1].flow.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        self.stack[-1].flow.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)
        self.stack[-1].flow.append(data)


def parse_dom(html_text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html_text)
    builder.close()
    return builder.root


# -- a live page over the DevTools protocol ---------------------------------------------


class Page:
    """One tab of a headless Chromium driven over ``--remote-debugging-pipe`` (the
    protocol's JSON messages, NUL-terminated, on file descriptors 3 and 4)."""

    def __init__(self, proc: subprocess.Popen, to_browser: Any, from_browser: Any) -> None:
        self._proc, self._out, self._in = proc, to_browser, from_browser
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        self.requests: list[str] = []  # every URL the page asked for, in order
        # what the browser's console shows as an error: uncaught exceptions,
        # console.error calls, failed loads (Runtime and Log are enabled before the page)
        self.console_errors: list[str] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self._proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(
                details.get("exception", {}).get("description") or details.get("text", "")
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('text', '')} {entry.get('url', '')}")
        return message

    def send(self, method: str, params: dict | None = None) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session:
            message["sessionId"] = self._session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        error = ""
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError as err:  # e.g. the page is between two documents
                value, error = None, str(err)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} stayed false for {timeout_s} s {error}")
            time.sleep(0.1)

    def goto(self, url: str, timeout_s: float = 60.0) -> None:
        # A mark on the current document: the next one to finish loading lacks it.
        self.evaluate("window.__leftBehind = true")
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise RuntimeError(f"{url}: {answer['errorText']}")
        self.wait_for("!window.__leftBehind && document.readyState === 'complete'", timeout_s)

    def dom(self) -> str:
        """The rendered DOM now, as HTML (what ``--dump-dom`` prints)."""
        return self.evaluate("document.documentElement.outerHTML")

    def hover(self, x: float, y: float) -> None:
        """Move the mouse to viewport point (x, y), as a person pointing at it."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})


def _above_nine(fd: int) -> int:
    """``fd`` moved to the lowest free descriptor above 9 (the original closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


@contextmanager
def open_page(
    url: str, profile: Path, *, window: tuple[int, int] = WINDOW, offline: bool = False
) -> Iterator[Page]:
    """A live tab on ``url`` (loaded), with the page's requests recorded from the start."""
    args = _flags(profile, window, offline, url)
    to_r, to_w = os.pipe()  # we write, Chromium reads on fd 3
    from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read
    # Chromium's ends moved above 9, so putting them on 3 and 4 cannot overwrite each other;
    # bash puts them there, closes the originals and execs Chromium.
    to_r, from_w = _above_nine(to_r), _above_nine(from_w)
    redirect = f'exec "$0" "$@" 3<&{to_r} {to_r}<&- 4>&{from_w} {from_w}>&-'
    proc = subprocess.Popen(
        ["/bin/bash", "-c", redirect, *args, "--remote-debugging-pipe", "about:blank"],
        pass_fds=(to_r, from_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_r)
    os.close(from_w)
    to_browser = os.fdopen(to_w, "wb", buffering=0)
    from_browser = os.fdopen(from_r, "rb", buffering=0)
    page = Page(proc, to_browser, from_browser)
    try:
        targets = page.send("Target.getTargets")["targetInfos"]
        tab = next(t for t in targets if t["type"] == "page")
        attached = page.send(
            "Target.attachToTarget", {"targetId": tab["targetId"], "flatten": True}
        )
        page._session = attached["sessionId"]
        page.send("Network.enable")
        page.send("Runtime.enable")
        page.send("Log.enable")
        page.goto(url)
        yield page
    finally:
        with suppress(BrokenPipeError):  # already gone: wait() below reaps it
            to_browser.write(b'{"id": 0, "method": "Browser.close"}\0')
        to_browser.close()
        from_browser.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
