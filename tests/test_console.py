"""The web console in a real browser: headless Chromium driven by selenium against live kvd
processes, following the console's DOM contract (ids and classes in kvd/doors/console/).

Every check waits with a deadline for what the page shows (WebDriverWait, `wait_for`); nothing
sleeps and hopes. When a test fails, the page as it was and each of its four views are saved
under tests/artifacts/<test>/ (screenshots, the page's HTML, the browser's log). The README's
screenshot is taken by `test_screenshot_for_readme` and written to
kvd/doors/console/screenshot.png when KV_CONSOLE_SCREENSHOT=1 is set (tests/artifacts/console.png
otherwise).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, Kvd, env_for, info, run_kvsh, running, wait_for

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is a test dependency: pip install -e .[test]")

from selenium.common.exceptions import (  # noqa: E402 - only once selenium is known to exist
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
               None)
DRIVER = shutil.which("chromedriver")
if BROWSER is None or DRIVER is None:
    pytest.skip("no Chromium or chromedriver on PATH: apt-get install chromium chromium-driver "
                "(.ci/run does)", allow_module_level=True)

ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOT = ROOT / "kvd" / "doors" / "console" / "screenshot.png"
# A <script> without src (inline), or any src/href that leaves the node (a CDN).
INLINE_OR_REMOTE = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>|(?:src|href)=[\"']?(?:https?:)?//",
                              re.IGNORECASE)
VIEWS = ("keys", "watch", "cluster", "node")
WAIT_S = 15.0  # generous: two cores shared with other work
XSS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "\"quotes\" 'single' `back` & &amp;",
    "line one\nline two",
    "emoji \U0001f600\U0001f680 done",
    "nul \x00 inside",
]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module; each test loads the page it needs."""
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = BROWSER
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kvd]:
    """One node for the tests that only read and write keys (each uses its own prefix)."""
    with running(tmp_path_factory.mktemp("console"), "c1") as kvd:
        yield kvd


@pytest.fixture
def page(browser: webdriver.Chrome, request: pytest.FixtureRequest) -> Iterator[webdriver.Chrome]:
    """The browser for one test; on failure, what it showed is saved as artifacts."""
    yield browser
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        save_artifacts(browser, ARTIFACTS / request.node.name)
    browser.set_window_size(1280, 900)


def save_artifacts(driver: webdriver.Chrome, where: Path) -> None:
    """The page as it is, then each view; a page too broken to click still leaves the first."""
    where.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(NoAlertPresentException):
        driver.switch_to.alert.dismiss()  # an alert blocks screenshots (and means XSS ran)
    try:
        driver.save_screenshot(str(where / "as-is.png"))
        (where / "page.html").write_text(driver.page_source)
        (where / "browser.log").write_text(
            "".join(f"{e['level']} {e['message']}\n" for e in driver.get_log("browser")))
        for view in VIEWS:
            driver.find_element(By.ID, f"tab-{view}").click()
            driver.save_screenshot(str(where / f"{view}.png"))
    except WebDriverException as e:  # the artifacts are a best effort; the failure is the report
        (where / "error.txt").write_text(str(e))


# -- helpers ---------------------------------------------------------------------------------


def until(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], object], what: str,
          timeout: float = WAIT_S) -> object:
    """Poll `check` until truthy (the page re-renders: a stale element just means look again)."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,
                                             ElementClickInterceptedException,
                                             ElementNotInteractableException))
    return wait.until(check, message=f"timed out after {timeout}s waiting for {what}")


def stays_absent(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], object],
                 what: str, for_s: float = 1.5) -> None:
    """`check` stays falsy for `for_s` seconds: the one way to see that something does not
    happen (it fails as soon as it does)."""
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        assert not check(driver), f"{what} happened"
        time.sleep(0.1)  # a polling interval within the window, not a wait for an event


def open_console(driver: webdriver.Chrome, kvd: Kvd) -> None:
    driver.get(f"http://127.0.0.1:{kvd.http_port}/")
    until(driver, lambda d: d.find_element(By.ID, "section-keys").is_displayed(),
          "the console's keys view")


def by_id(driver: webdriver.Chrome, id_: str) -> WebElement:
    return driver.find_element(By.ID, id_)


def text_of(el: WebElement) -> str:
    """The element's text exactly as the DOM holds it (selenium's .text folds whitespace)."""
    return el.get_property("textContent")


def show(driver: webdriver.Chrome, view: str) -> None:
    by_id(driver, f"tab-{view}").click()
    until(driver, lambda d: by_id(d, f"section-{view}").is_displayed(), f"the {view} view")
    for other in VIEWS:
        if other != view:
            assert not by_id(driver, f"section-{other}").is_displayed(), (view, other)


def listed(driver: webdriver.Chrome) -> dict[str, WebElement]:
    """The listed keys by data-key, in one round trip (a page may list hundreds)."""
    return dict(driver.execute_script(
        "return [...document.querySelectorAll('#keys li.key-item')]"
        ".map(li => [li.getAttribute('data-key'), li]);"))


def search(driver: webdriver.Chrome, prefix: str, expect: list[str]) -> dict[str, WebElement]:
    """Type `prefix` and wait until exactly the keys `expect` are listed (clicking #more)."""
    box = by_id(driver, "search")
    box.clear()
    box.send_keys(prefix)

    def complete(d: webdriver.Chrome) -> dict[str, WebElement] | None:
        items = listed(d)
        if sorted(items) == sorted(expect):
            return items
        more = by_id(d, "more")
        # Only this prefix's listing has a next page worth asking for (the page opens with the
        # whole keyspace listed); a listing being replaced may hide it before the click lands.
        if items and all(k.startswith(prefix) for k in items) and more.is_displayed():
            more.click()
        return None

    return until(driver, complete, f"the keys under {prefix!r} to be listed")


def click_key(driver: webdriver.Chrome, key: str) -> None:
    def click(d: webdriver.Chrome) -> bool:
        li = listed(d).get(key)
        return li is not None and (li.click() or True)

    until(driver, click, f"{key!r} to be clickable")


def open_key(driver: webdriver.Chrome, key: str) -> None:
    click_key(driver, key)
    until(driver, lambda d: text_of(by_id(d, "value-key")) == key, f"{key!r} to open")


def assert_no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when no alert is open


def events(driver: webdriver.Chrome, key: str) -> list[WebElement]:
    return [li for li in driver.find_elements(By.CSS_SELECTOR, "#events li.event")
            if li.get_attribute("data-key") == key]


# -- the page and its headers ----------------------------------------------------------------


def test_served_with_csp_and_nothing_inline(node: Kvd, page: webdriver.Chrome) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        for target in ("/", "/console/index.html"):
            conn.request("GET", target)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and b'id="tab-keys"' in body, (target, resp.status)
            csp = resp.getheader("content-security-policy", "")
            assert "script-src 'self'" in csp and "default-src 'self'" in csp, csp
            assert resp.getheader("x-content-type-options") == "nosniff"
            assert not INLINE_OR_REMOTE.search(body), INLINE_OR_REMOTE.search(body)
        for asset in ("/console/console.css", "/console/console.js"):
            conn.request("GET", asset)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read(), asset
    finally:
        conn.close()
    page.get_log("browser")  # drop what earlier pages logged
    open_console(page, node)
    violations = [e for e in page.get_log("browser") if "Content Security Policy" in e["message"]]
    assert violations == []


# -- keys ------------------------------------------------------------------------------------


def test_search_a_prefix_and_open_json(node: Kvd, page: webdriver.Chrome) -> None:
    doc = {"region": "eu-west", "replicas": 3, "tags": ["a", "b"], "limits": {"cpu": 2}}
    keys = [f"app/k{i:03d}" for i in range(250)]  # more than one page of any sane page size
    with node.client() as c:
        c.mset({k: f"v{k}" for k in keys})
        c.set("app/config", json.dumps(doc))
        c.set("app/session", "short-lived", ex=600)
        c.set("apx/not-this", "x")
    open_console(page, node)
    items = search(page, "app/", [*keys, "app/config", "app/session"])
    assert "expires in" in text_of(items["app/session"].find_element(By.CLASS_NAME, "ttl"))
    assert "no expiry" in text_of(items["app/config"].find_element(By.CLASS_NAME, "ttl"))
    assert not by_id(page, "more").is_displayed()

    open_key(page, "app/config")
    tree = by_id(page, "value-view").find_element(By.CLASS_NAME, "json")
    shown = tree.get_property("innerText")
    for word in ("region", "eu-west", "replicas", "3", "limits", "cpu"):
        assert word in shown, (word, shown)
    assert shown.count("\n") >= 4, shown  # pretty-printed, not one line
    assert str(len(json.dumps(doc))) in text_of(by_id(page, "value-meta"))  # size in bytes
    fold = tree.find_element(By.TAG_NAME, "details")
    was_open = fold.get_property("open")
    fold.find_element(By.TAG_NAME, "summary").click()
    until(page, lambda d: fold.get_property("open") != was_open, "the JSON node to fold")


def test_open_a_key_with_the_keyboard(node: Kvd, page: webdriver.Chrome) -> None:
    with node.client() as c:
        c.set("kbd/plain", "just text")
    open_console(page, node)
    search(page, "kbd/", ["kbd/plain"])
    li = listed(page)["kbd/plain"]
    target = page.execute_script(
        "const li = arguments[0]; return li.matches('[tabindex], button, a') ? li"
        " : li.querySelector('[tabindex], button, a');", li)
    assert target is not None, "a key in the list cannot take the keyboard's focus"
    target.send_keys(Keys.ENTER)
    until(page, lambda d: text_of(by_id(d, "value-key")) == "kbd/plain", "Enter to open the key")
    assert text_of(by_id(page, "value-view").find_element(By.CSS_SELECTOR, "pre.text")) \
        == "just text"


def test_edit_and_see_it_through_kvsh(node: Kvd, page: webdriver.Chrome) -> None:
    with node.client() as c:
        c.set("edit/doc", '{"v": 1}')
    open_console(page, node)
    search(page, "edit/", ["edit/doc"])
    open_key(page, "edit/doc")
    by_id(page, "edit").click()
    editor = by_id(page, "editor")
    until(page, lambda d: editor.is_displayed(), "the editor")
    assert editor.get_property("value") == '{"v": 1}'
    editor.clear()
    editor.send_keys('{"v": 2, "by": "console"}')
    by_id(page, "save").click()
    with node.client() as c:
        wait_for(lambda: c.get("edit/doc") == b'{"v": 2, "by": "console"}', what="the save")
    out = run_kvsh(node.home, node.port, "-c", "GET edit/doc")
    assert out.returncode == 0 and out.stdout.decode().strip() == '{"v": 2, "by": "console"}'
    until(page, lambda d: "console" in text_of(by_id(d, "value-view")), "the new value shown")

    # A write elsewhere after the page read the value: setting the TTL must not undo it (it
    # changes the expiry alone, PATCH ?ttl=, instead of writing the page's copy back).
    with node.client() as c:
        c.set("edit/doc", '{"v": 3, "by": "kvsh"}')
    ttl = by_id(page, "ttl-input")
    ttl.clear()
    ttl.send_keys("120")
    by_id(page, "set-ttl").click()
    with node.client() as c:
        wait_for(lambda: 0 < c.ttl("edit/doc") <= 120, what="the TTL to be set")
        assert c.get("edit/doc") == b'{"v": 3, "by": "kvsh"}'
    ttl.clear()  # empty: no expiry
    by_id(page, "set-ttl").click()
    with node.client() as c:
        wait_for(lambda: c.ttl("edit/doc") == -1, what="the expiry to be removed")
        assert c.get("edit/doc") == b'{"v": 3, "by": "kvsh"}'


def test_delete_asks_first(node: Kvd, page: webdriver.Chrome) -> None:
    with node.client() as c:
        c.set("del/me", "precious")
        c.set("del/other", "stays")
    open_console(page, node)
    search(page, "del/", ["del/me", "del/other"])
    open_key(page, "del/me")
    confirm = by_id(page, "confirm-delete")
    by_id(page, "delete").click()
    until(page, lambda d: confirm.is_displayed(), "the confirmation")
    by_id(page, "confirm-no").click()
    until(page, lambda d: not confirm.is_displayed(), "the confirmation to close")
    with node.client() as c:
        assert c.get("del/me") == b"precious"
    assert "del/me" in listed(page)

    by_id(page, "delete").click()
    until(page, lambda d: confirm.is_displayed(), "the confirmation, again")
    by_id(page, "confirm-yes").click()
    with node.client() as c:
        wait_for(lambda: c.get("del/me") is None, what="the delete")
        assert c.get("del/other") == b"stays"
    until(page, lambda d: sorted(listed(d)) == ["del/other"], "the key to leave the list")


def test_new_key_form(node: Kvd, page: webdriver.Chrome) -> None:
    open_console(page, node)
    for id_, text in (("new-key-name", "new/one"), ("new-key-value", "fresh value"),
                      ("new-key-ttl", "300")):
        by_id(page, id_).send_keys(text)
    by_id(page, "new-key-save").click()
    with node.client() as c:
        wait_for(lambda: c.get("new/one") == b"fresh value", what="the new key")
        assert 0 < c.ttl("new/one") <= 300
    search(page, "new/", ["new/one"])


def test_a_large_value_waits_to_be_asked_for(node: Kvd, page: webdriver.Chrome) -> None:
    big = "0123456789abcdef" * (100 * 1024 // 16)  # 100 KiB, over the console's 64 KiB
    with node.client() as c:
        c.set("big/one", big)
    open_console(page, node)
    search(page, "big/", ["big/one"])
    open_key(page, "big/one")
    load_full = by_id(page, "load-full")
    until(page, lambda d: load_full.is_displayed(), "the load-full button")
    assert "100" in text_of(by_id(page, "value-meta")), "the size is shown first"
    assert big not in text_of(by_id(page, "value-view"))
    load_full.click()
    until(page, lambda d: big in text_of(by_id(d, "value-view")), "the whole value")


def test_bad_input_renders_as_text(node: Kvd, page: webdriver.Chrome) -> None:
    keys = {f"xss/{i} {payload}": payload for i, payload in enumerate(XSS)}
    raw_key, raw_value = b"xss/raw \xff\xfe", b"\x00\x01\xff\xfebinary"
    with node.client() as c:
        c.mset(keys)
        c.set(raw_key, raw_value)
    open_console(page, node)
    box = by_id(page, "search")
    box.clear()
    box.send_keys("xss/")
    until(page, lambda d: len(listed(d)) == len(keys) + 1, "every bad key to be listed")
    items = listed(page)
    for key in keys:
        assert key in items, (key, sorted(items))
        assert text_of(items[key].find_element(By.CLASS_NAME, "key")) == key
    raw_b64 = base64.b64encode(raw_key).decode()
    assert any(raw_b64 in k for k in items), sorted(items)
    assert_no_alert(page)

    for key, value in keys.items():
        open_key(page, key)
        until(page, lambda d, value=value: value in text_of(by_id(d, "value-view")),
              f"the value of {key!r} as text")
        assert_no_alert(page)
    injected = page.find_elements(By.CSS_SELECTOR, "#section-keys img, #section-keys script")
    assert injected == [], [e.get_attribute("outerHTML") for e in injected]

    click_key(page, next(k for k in items if raw_b64 in k))
    hexdump = until(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#value-view pre.hex"),
                    "a hex dump of the binary value")[0]
    assert "ff fe" in text_of(hexdump).lower(), text_of(hexdump)
    assert_no_alert(page)


# -- live changes ----------------------------------------------------------------------------


def test_a_write_from_kvsh_shows_live(node: Kvd, page: webdriver.Chrome) -> None:
    open_console(page, node)
    show(page, "watch")
    by_id(page, "watch-prefix").send_keys("live/")
    by_id(page, "watch-start").click()
    with node.client() as c:
        # Subscribed once a probe write comes back (no guess at when EventSource connects).
        n = iter(range(10**6))
        until(page, lambda d: c.set("live/probe", str(next(n))) and events(d, "live/probe"),
              "the live panel to subscribe")
    value = "<b>from kvsh</b> \U0001f600"
    out = run_kvsh(node.home, node.port, "-c", f'SET live/k1 "{value}"')
    assert out.returncode == 0, out
    until(page, lambda d: events(d, "live/k1"), "the kvsh write in the live panel", timeout=5)
    newest = page.find_element(By.CSS_SELECTOR, "#events li.event")
    assert newest.get_attribute("data-key") == "live/k1"
    assert newest.get_attribute("data-op") == "set"
    assert value in text_of(newest), text_of(newest)
    assert page.find_elements(By.CSS_SELECTOR, "#events b") == []

    by_id(page, "watch-pause").click()
    with node.client() as c:
        c.set("live/while-paused", "missed?")
        c.delete("live/k1")
    stays_absent(page, lambda d: events(d, "live/while-paused"), "an event shown while paused")
    by_id(page, "watch-pause").click()
    until(page, lambda d: events(d, "live/while-paused"), "the missed write after resuming")
    until(page, lambda d: [e.get_attribute("data-op") for e in events(d, "live/k1")]
          == ["del", "set"], "the delete, newest first")
    assert_no_alert(page)


class CuttableProxy:
    """A TCP relay between the browser and a node that the test can cut: every open connection
    (the SSE stream among them) is closed and new ones are refused until it is restored, as a
    dropped network would do. (Chromium's offline emulation leaves an open stream alone.)"""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # cut: the other pump and cut() close the rest
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.open.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_the_live_panel_resumes_after_the_connection_drops(node: Kvd,
                                                           page: webdriver.Chrome) -> None:
    """Writes made while the page is cut off appear once it is back, each exactly once: the
    stream resumes after the last event shown (Last-Event-ID / from), neither skipping nor
    replaying."""
    proxy = CuttableProxy(node.http_port)
    try:
        page.get(f"http://127.0.0.1:{proxy.port}/")
        until(page, lambda d: by_id(d, "node-state").text == "connected", "the page")
        resume_after_a_drop(page, node, proxy)
    finally:
        proxy.close()


def resume_after_a_drop(page: webdriver.Chrome, node: Kvd, proxy: CuttableProxy) -> None:
    show(page, "watch")
    by_id(page, "watch-prefix").send_keys("drop/")
    by_id(page, "watch-start").click()
    with node.client() as c:
        n = iter(range(10**6))
        until(page, lambda d: c.set("drop/probe", str(next(n))) and events(d, "drop/probe"),
              "the live panel to subscribe")
        c.set("drop/before", "seen live")
        until(page, lambda d: events(d, "drop/before"), "a write before the drop")
    probes = len(events(page, "drop/probe"))
    proxy.cut()
    until(page, lambda d: "lost" in text_of(by_id(d, "watch-status")), "the drop seen")
    with node.client() as c:  # straight to the node: the page cannot see these yet
        for i in range(5):
            c.set(f"drop/while-{i}", f"v{i}")
        c.delete("drop/before")
    stays_absent(page, lambda d: events(d, "drop/while-0"), "an event while cut off")
    proxy.up = True
    until(page, lambda d: all(events(d, f"drop/while-{i}") for i in range(5))
          and len(events(d, "drop/before")) == 2, "the writes made while cut off", timeout=30)
    with node.client() as c:
        c.set("drop/after", "live again")
    until(page, lambda d: events(d, "drop/after"), "a write after the reconnect")
    for i in range(5):
        assert len(events(page, f"drop/while-{i}")) == 1, f"drop/while-{i} shown twice"
    assert [e.get_attribute("data-op") for e in events(page, "drop/before")] == ["del", "set"]
    assert len(events(page, "drop/probe")) == probes, "events before the drop replayed"
    shown = [e.get_attribute("data-key")
             for e in page.find_elements(By.CSS_SELECTOR, "#events li.event")]
    assert shown[:7] == ["drop/after", "drop/before",
                         *[f"drop/while-{i}" for i in range(4, -1, -1)]], shown


# -- cluster and node ------------------------------------------------------------------------


def member_rows(driver: webdriver.Chrome) -> dict[str, WebElement]:
    return {tr.get_attribute("data-member"): tr
            for tr in driver.find_elements(By.CSS_SELECTOR, "#members tr.member")}


def status_of(driver: webdriver.Chrome, name: str) -> str | None:
    row = member_rows(driver).get(name)
    if row is None:
        return None
    status = text_of(row.find_element(By.CLASS_NAME, "status")).strip()
    return status if f"status-{status}" in row.get_attribute("class").split() else None


def test_cluster_view_sees_a_member_leave(kvd_factory: Callable[..., Kvd],
                                          page: webdriver.Chrome) -> None:
    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    open_console(page, a)
    show(page, "cluster")
    until(page, lambda d: status_of(d, "a") == "alive" and status_of(d, "b") == "alive",
          "both members alive")
    rows = member_rows(page)
    assert "self" in rows["a"].get_attribute("class").split()
    assert "self" not in rows["b"].get_attribute("class").split()
    assert text_of(rows["b"].find_element(By.CLASS_NAME, "address")).strip() == b.address
    for cell in ("name", "last-seen", "lag", "digest"):
        rows["a"].find_element(By.CLASS_NAME, cell)
    until(page, lambda d: "digests agree" in text_of(by_id(d, "digests")), "digests agree")
    b.stop()
    until(page, lambda d: status_of(d, "b") in ("left", "dead"), "b to be shown left or dead",
          timeout=30)
    assert status_of(page, "a") == "alive"


def console_link(driver: webdriver.Chrome, name: str) -> str | None:
    found = member_rows(driver)[name].find_elements(By.CSS_SELECTOR, "a.open-console")
    return found[0].get_attribute("href") if found else None


def digest_shown(driver: webdriver.Chrome, name: str) -> str:
    return text_of(member_rows(driver)[name].find_element(By.CLASS_NAME, "digest")).strip()


def test_cluster_view_links_and_compares_through_its_own_node(
        kvd_factory: Callable[..., Kvd], page: webdriver.Chrome) -> None:
    """Each member's HTTP door and digest come from its heartbeats, through our node's
    /v1/members: the link is the member's own (no port guessed), the digest its own."""
    a = kvd_factory("a")
    b = kvd_factory("b", extra=["--join", a.address])
    with a.client() as c:
        c.set("agree/k", "v")
    open_console(page, a)
    show(page, "cluster")
    assert until(page, lambda d: "b" in member_rows(d) and console_link(d, "b"),
                 "a link to b's console") == f"http://127.0.0.1:{b.http_port}/"
    assert console_link(page, "a") is None
    with b.client() as c:
        wait_for(lambda: c.get("agree/k") == b"v", what="the write to replicate")
    until(page, lambda d: text_of(by_id(d, "digests")) == "digests agree"
          and digest_shown(d, "b") == info(b)["digest"], "b's digest shown, agreeing")
    assert "2 live members compared" in text_of(by_id(page, "digests-note"))


def test_digests_not_known_are_not_claimed_to_agree(node: Kvd, page: webdriver.Chrome) -> None:
    """A live member whose digest is unknown (an older kv) or stale (silent for a while): the
    page says it cannot compare, never that the digests agree."""
    open_console(page, node)
    show(page, "cluster")
    me = {"name": "me", "address": "127.0.0.1:1", "status": "alive", "self": True,
          "last_seen_ms": 0, "lag_ms": 0, "http": None, "digest": "00000000000000aa",
          "digest_age_ms": 0}
    for other in ({"digest": None, "digest_age_ms": None}, {"digest_age_ms": 60_000}):
        them = {**me, "name": "them", "address": "127.0.0.1:2", "self": False, **other}
        # The poll redraws from the node every second: render and read in one script.
        verdict = page.execute_script(
            "renderMembers(arguments[0]); return [document.getElementById('digests')"
            ".textContent, document.getElementById('digests-note').textContent];", [me, them])
        assert verdict[0] == "cannot compare digests" and "1 of 2" in verdict[1], (other, verdict)


def test_node_view(node: Kvd, page: webdriver.Chrome) -> None:
    open_console(page, node)
    show(page, "node")
    until(page, lambda d: any(ch.isdigit() for ch in text_of(by_id(d, "stat-keys"))), "keys")
    assert "everysec" in text_of(by_id(page, "stat-fsync"))
    for stat in ("memory", "log", "uptime", "compaction"):
        until(page, lambda d, stat=stat: text_of(by_id(d, f"stat-{stat}")).strip("… "), stat)
    for chart in ("chart-ops", "chart-p99"):  # live: redrawn as samples arrive (every second)
        drawn = until(page, lambda d, chart=chart: by_id(d, chart).get_property("innerHTML"),
                      f"{chart} drawn")
        until(page, lambda d, chart=chart, drawn=drawn:
              by_id(d, chart).get_property("innerHTML") not in ("", drawn), f"{chart} to move")


def test_banner_when_the_node_goes_and_comes_back(kvd_factory: Callable[..., Kvd],
                                                  page: webdriver.Chrome) -> None:
    n = kvd_factory("gone")
    open_console(page, n)
    banner = by_id(page, "banner")
    until(page, lambda d: not banner.is_displayed(), "no banner while the node answers")
    n.stop()
    until(page, lambda d: banner.is_displayed() and banner.text.strip(), "the banner")
    n.start()
    until(page, lambda d: not banner.is_displayed(), "the banner to go", timeout=30)
    with n.client() as c:
        c.set("back/again", "yes")
    search(page, "back/", ["back/again"])


# -- the page itself: narrow, keyboard, dark -------------------------------------------------


def test_usable_at_375px(node: Kvd, page: webdriver.Chrome) -> None:
    page.set_window_size(375, 800)
    open_console(page, node)
    for view in (*VIEWS[1:], "keys"):
        tab = by_id(page, f"tab-{view}")
        assert tab.is_displayed() and tab.is_enabled(), view
        show(page, view)
        width = page.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the {view} view scrolls sideways at 375 px: {width}"
    with node.client() as c:
        c.set("narrow/k", "v")
    search(page, "narrow/", ["narrow/k"])


def test_tabs_with_the_keyboard(node: Kvd, page: webdriver.Chrome) -> None:
    open_console(page, node)
    for view in (*VIEWS[1:], "keys"):
        tab = by_id(page, f"tab-{view}")
        assert tab.tag_name == "button", view
        tab.send_keys(Keys.ENTER)
        until(page, lambda d, view=view: by_id(d, f"section-{view}").is_displayed(), view)


def test_readable_in_dark_mode(node: Kvd, page: webdriver.Chrome) -> None:
    def luminance(css: str) -> float:
        rgb = [float(x) for x in css[css.index("(") + 1:css.index(")")].split(",")[:3]]
        return (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255

    page.execute_cdp_cmd("Emulation.setEmulatedMedia",
                         {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        open_console(page, node)
        bg, fg = page.execute_script(
            "const s = getComputedStyle(document.body);"
            "let bg = s.backgroundColor;"
            "if (bg === 'rgba(0, 0, 0, 0)') bg = getComputedStyle("
            "document.documentElement).backgroundColor;"
            "return [bg, s.color];")
        assert luminance(bg) < 0.35 < 0.6 < luminance(fg), (bg, fg)
    finally:
        page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


# -- the README's picture --------------------------------------------------------------------


def test_screenshot_for_readme(node: Kvd, page: webdriver.Chrome) -> None:
    """A console with something in it; written where README points when asked to."""
    doc = {"service": "checkout", "replicas": 3, "regions": ["eu-west", "us-east"],
           "limits": {"cpu": "500m", "memory": "256Mi"}, "canary": False}
    with node.client() as c:
        c.set("config/checkout", json.dumps(doc))
        c.set("config/search", json.dumps({"service": "search", "replicas": 2}))
        c.set("config/feature-flags", "dark-mode=on\nnew-cart=off", ex=3600)
        c.set("config/banner", "Welcome back!")
    open_console(page, node)
    search(page, "config/", ["config/banner", "config/checkout", "config/feature-flags",
                             "config/search"])
    open_key(page, "config/checkout")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT if os.environ.get("KV_CONSOLE_SCREENSHOT") else ARTIFACTS / "console.png"
    assert page.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def add_users(kvd: Kvd) -> None:
    """root (admin, password root-pw) and reader (reads everything, password reader-pw)."""
    for name, flags, login in (("root", ["--admin"], None), ("reader", ["--read", "*"], "root")):
        env = env_for(kvd.home) | {"KV_PASSWORD": "root-pw"}
        argv = [sys.executable, "-m", "kvd", "user", "add", name, "--password-stdin", *flags,
                "--port", str(kvd.port), *(["--user", login] if login else [])]
        out = subprocess.run(argv, input=f"{name}-pw\n".encode(), env=env,
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr


def log_in(driver: webdriver.Chrome, kvd: Kvd, user: str) -> None:
    driver.get(f"http://127.0.0.1:{kvd.http_port}/")
    until(driver, lambda d: by_id(d, "login").is_displayed(), "the login form")
    by_id(driver, "login-user").send_keys(user)
    by_id(driver, "login-password").send_keys(f"{user}-pw")
    by_id(driver, "login-submit").click()
    until(driver, lambda d: not by_id(d, "login").is_displayed(), "logged in")


def test_cluster_view_with_users_compares_and_links_every_member(
        kvd_factory: Callable[..., Kvd], page: webdriver.Chrome) -> None:
    """With users, another member's API needs a login of its own (our session cookie is our
    node's): the page still shows its digest and link, from our node, and compares them."""
    a = kvd_factory("a")
    add_users(a)
    b = kvd_factory("b", extra=["--join", a.address])
    with a.client(user="root", password="root-pw") as c:
        c.set("agree/k", "v")
    with b.client(user="root", password="root-pw") as c:  # the users replicate to b too
        wait_for(lambda: c.get("agree/k") == b"v", what="the users and the write to replicate")
    log_in(page, a, "reader")
    show(page, "cluster")
    until(page, lambda d: "b" in member_rows(d) and console_link(d, "b"), "a link to b")
    assert console_link(page, "b") == f"http://127.0.0.1:{b.http_port}/"
    with b.client(user="root", password="root-pw") as c:
        b_digest = c.info()["digest"]
    until(page, lambda d: text_of(by_id(d, "digests")) == "digests agree"
          and digest_shown(d, "b") == b_digest, "b's digest shown, agreeing")
    assert "2 live members compared" in text_of(by_id(page, "digests-note"))
    b.stop()  # gone: not compared, not linked
    until(page, lambda d: status_of(d, "b") in ("left", "dead"), "b gone", timeout=30)
    assert console_link(page, "b") is None
    assert "1 live member compared" in text_of(by_id(page, "digests-note"))


def test_login_form_when_the_node_has_users(kvd_factory: Callable[..., Kvd],
                                            page: webdriver.Chrome) -> None:
    kvd = kvd_factory("locked")
    add_users(kvd)
    with kvd.client(user="root", password="root-pw") as c:
        c.set("seen:1", "one")
    page.get(f"http://127.0.0.1:{kvd.http_port}/")
    until(page, lambda d: by_id(d, "login").is_displayed(), "the login form")
    assert not by_id(page, "section-keys").is_displayed()
    by_id(page, "login-user").send_keys("reader")
    by_id(page, "login-password").send_keys("wrong")
    by_id(page, "login-submit").click()
    until(page, lambda d: by_id(d, "login-error").is_displayed(), "the refusal")
    assert "refused" in text_of(by_id(page, "login-error"))
    by_id(page, "login-password").clear()
    by_id(page, "login-password").send_keys("reader-pw")
    by_id(page, "login-submit").click()
    until(page, lambda d: "seen:1" in listed(d), "the keys, once logged in")
    assert not by_id(page, "login").is_displayed()
    until(page, lambda d: text_of(by_id(d, "whoami")) == "as reader", "who is logged in")
    assert not by_id(page, "new-key-save").is_enabled()  # reader may not write
    # Showing a (text, editable) value must not give the write controls back.
    open_key(page, "seen:1")
    until(page, lambda d: "one" in text_of(by_id(d, "value-view")), "the value")
    for control in ("edit", "delete", "set-ttl"):
        assert not by_id(page, control).is_enabled(), f"{control} enabled for a reader"
    by_id(page, "logout").click()
    until(page, lambda d: by_id(d, "login").is_displayed(), "the login form after logging out")
