"""The status page (SPEC §12) in a real browser: headless Chromium (Debian
`chromium`) loads GET / from mxlb, its DOM shows the listeners and
backends (names escaped), and a drain made by typing the token into the
page and clicking its button is what /status then says. Chromium is
driven over the DevTools protocol (python3-websocket); a screenshot goes
to $MXLB_BUILD/status-page.png for people to look at."""
import base64
import html.parser
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from conftest import BUILD, free_port, terminate, wait_for

CHROMIUM = shutil.which("chromium")
TOKEN = "page-tests-0123456789abcdef"
# the characters a name may hold that HTML and URLs care about
ODD = "<b>x&y'z?%#é"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian package chromium, in tests/deps.sh test)")


def chromium_flags(tmp):
    flags = ["--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", f"--user-data-dir={tmp / 'chromium-profile'}",
             "--window-size=1280,900"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return flags


def start(env, token=TOKEN):
    """mxlb in front of two sinks checked by smtp (so capabilities show), the
    second backend with the odd name."""
    a, b = env.sink(), env.sink()
    admin = {"listen": f"127.0.0.1:{free_port()}"}
    if token:
        admin["token"] = token
    backends = [{"name": "b0", "address": f"127.0.0.1:{a.port}"},
                {"name": ODD, "address": f"127.0.0.1:{b.port}", "weight": 3}]
    # checks that a loaded machine cannot fail: the backends stay up throughout
    pool = {"name": "main", "backends": backends,
            "health": {"check": "smtp", "interval": "200ms", "timeout": "10s", "fall": 100}}
    mx = env.mxlb([], pools=[pool], server={"admin": admin})
    mx.admin_port = int(admin["listen"].rsplit(":", 1)[1])
    wait_for(lambda: all(x["last_check"] and x["last_check"]["ok"] for x in backends_of(mx)),
             what="a first good check of both")
    return mx


def status(mx):
    with urllib.request.urlopen(f"http://127.0.0.1:{mx.admin_port}/status", timeout=5) as r:
        return json.load(r)


def backends_of(mx):
    return status(mx)["pools"][0]["backends"]


def states(mx):
    return {x["name"]: x["state"] for x in backends_of(mx)}


class Dom(html.parser.HTMLParser):
    """The rows of a dumped DOM: [(tr attributes, [text of each cell])], and
    every tag seen inside a cell."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell_tags = [], []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append((dict(attrs), []))
        elif tag == "td" and self.rows:
            self.cell = ""
        elif self.cell is not None:
            self.cell_tags.append(tag)

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1][1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def dump_dom(tmp, url):
    """The DOM after the page's script ran for a while of virtual time."""
    r = subprocess.run([CHROMIUM, *chromium_flags(tmp), "--virtual-time-budget=7000",
                        "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_page_shows_listeners_and_backends_with_names_escaped(env, tmp_path):
    mx = start(env)
    out = dump_dom(tmp_path, f"http://127.0.0.1:{mx.admin_port}/")
    dom = Dom()
    dom.feed(out)
    backends = {a["data-backend"]: (a, cells) for a, cells in dom.rows
                if "backend" in a.get("class", "")}
    assert set(backends) == {"b0", ODD}
    attrs, cells = backends[ODD]
    assert attrs["data-pool"] == "main"
    assert cells[0] == ODD  # the name as text, not markup
    assert cells[2].strip() == "up" and cells[3].strip() == "3"
    assert "PIPELINING" in cells[10] and "8BITMIME" in cells[10]
    assert "ok" in cells[7]
    # nothing of a name became an element: cells hold only what the page puts there
    assert set(dom.cell_tags) <= {"span", "br", "time", "button", "code"}, dom.cell_tags
    listeners = [cells for a, cells in dom.rows if "listener" in a.get("class", "")]
    assert listeners and listeners[0][0] == "mx"
    assert listeners[0][1] == f"127.0.0.1:{mx.port}"
    # the token field is there (a token is set), and the script ran: it refreshed the page
    assert 'id="token"' in out
    assert re.search(r'id="refreshed"[^>]*>live, updated ', out), out[-3000:]
    # the same page under its other name
    assert "data-backend=\"b0\"" in dump_dom(tmp_path, f"http://127.0.0.1:{mx.admin_port}/status.html")
    assert mx.stop() == 0


def test_page_without_a_token_offers_no_actions(env, tmp_path):
    mx = start(env, token=None)
    out = dump_dom(tmp_path, f"http://127.0.0.1:{mx.admin_port}/")
    assert 'data-backend="b0"' in out
    assert 'id="token"' not in out and "data-act=" not in out
    assert "server.admin.token" in out
    assert status(mx)["actions"] is False
    assert mx.stop() == 0


# ---- driving the page over the DevTools protocol ----

class Browser:
    """One headless Chromium with one page, driven over the DevTools
    protocol; every request the page makes is recorded."""

    def __init__(self, tmp):
        import websocket  # python3-websocket

        self.log_path = tmp / "chromium.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([CHROMIUM, *chromium_flags(tmp), "--remote-debugging-port=0",
                                      "about:blank"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.ws = None
        try:
            self._connect(websocket)
        except BaseException:
            self.close()
            raise

    def _connect(self, websocket):
        port = wait_for(lambda: re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/",
                                          self.log_path.read_bytes()), timeout=60,
                        what="Chromium's DevTools port").group(1).decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = [t for t in json.load(r) if t["type"] == "page"][0]
        # no Origin header: Chromium accepts DevTools clients without one only
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.n = 0
        self.events = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Network.enable")

    def _recv(self):
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
        return msg

    def call(self, method, **params):
        self.n += 1
        n = self.n
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == n:
                assert "error" not in msg, (method, msg["error"])
                return msg.get("result", {})

    def wait_event(self, method, since):
        """Until an event `method` arrives after the first `since` events."""
        while not any(e["method"] == method for e in self.events[since:]):
            self._recv()

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def load(self, url):
        since = len(self.events)  # the event may come before navigate's answer
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", since)

    def type_into(self, selector, text):
        """Focus the field, select what it holds, and type over it as a user would."""
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                f" e.focus(); e.select(); }})()")
        self.call("Input.insertText", text=text)

    def click(self, selector):
        """A real mouse click in the middle of the element."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                      f".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def requests(self):
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try:
            if self.ws:
                self.ws.close()
        finally:
            terminate(self.proc, 15)
            self.log.close()


@pytest.fixture
def browser(tmp_path):
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("python3-websocket is not installed (tests/deps.sh test installs it)")
    b = Browser(tmp_path)
    yield b
    b.close()


def row(name):
    """A selector for the backend's row; the name is an attribute value."""
    return f"tr[data-backend={json.dumps(name, ensure_ascii=False)}]"


def page_state(browser, name):
    return browser.js(f"document.querySelector({json.dumps(row(name) + ' .state')}).textContent")


def test_drain_through_the_page_shows_in_status(env, browser):
    mx = start(env)
    base = f"http://127.0.0.1:{mx.admin_port}"
    browser.load(base + "/")
    assert page_state(browser, ODD) == "up"

    # a wrong token: refused (403), said on the page, nothing changes
    browser.type_into("#token", "not-the-token-0123456789")
    browser.click(row(ODD) + " button[data-act=drain]")
    msg = wait_for(lambda: browser.js("document.getElementById('msg').textContent"),
                   what="the page's answer")
    assert "403" in msg, msg
    assert states(mx)[ODD] == "up"

    # the right one: the drain is what /status says, and the page shows it
    browser.type_into("#token", TOKEN)
    browser.click(row(ODD) + " button[data-act=drain]")
    wait_for(lambda: states(mx)[ODD] == "drain", what="drain in /status")
    assert states(mx)["b0"] == "up"
    wait_for(lambda: page_state(browser, ODD) == "drain", what="drain on the page")
    wait_for(lambda: "done" in browser.js("document.getElementById('msg').textContent"),
             what="the page saying done")
    assert "drain" in [l for l in mx.log().splitlines() if "event=admin" in l][-1]
    BUILD.mkdir(parents=True, exist_ok=True)
    browser.screenshot(BUILD / "status-page.png")
    assert (BUILD / "status-page.png").stat().st_size > 10000

    # the token stays for this tab (sessionStorage), not in the page: a reload
    # still acts
    browser.load(base + "/")
    assert browser.js("document.getElementById('token').value") == TOKEN
    assert TOKEN not in browser.js("document.documentElement.outerHTML")
    browser.click(row(ODD) + " button[data-act=enable]")
    wait_for(lambda: states(mx)[ODD] == "up", what="enabled again")
    browser.click(row("b0") + " button[data-act=disable]")
    wait_for(lambda: states(mx)["b0"] == "disabled", what="b0 disabled")

    # self-contained: the page asked nothing of any other server
    assert browser.requests()
    assert all(u.startswith((base + "/", "data:")) for u in browser.requests()), browser.requests()
    assert mx.stop() == 0
