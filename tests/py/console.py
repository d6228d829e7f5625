"""Drives the shardcast console in a real headless Chromium over the Chrome
DevTools Protocol (the browser's own WebSocket; Python's `websockets`).

usage: console.py dev ADDR SHOTS_DIR
       console.py admin ADMIN_ADDR PUBLIC_ADDR SHOTS_DIR TOKEN API_KEY

Every step polls with a deadline. At the end it checks the page made no
request outside the server, and that the browser logged no error (a CSP
violation, a script exception, a failed fetch).
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import websockets

DEADLINE = 15.0


class Failure(Exception):
    pass


class Browser:
    """One headless Chromium and one page of it, attached in flat mode."""

    async def start(self, width=1400, height=1000):
        self.dir = tempfile.mkdtemp(prefix="shardcast-chromium-")
        binary = shutil.which("chromium") or "/usr/bin/chromium"
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.dir}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: closing kills the renderers too.
            start_new_session=True,
        )
        port_file = os.path.join(self.dir, "DevToolsActivePort")
        deadline = time.monotonic() + DEADLINE
        while not (os.path.exists(port_file) and len(open(port_file).read().split("\n")) >= 2):
            if self.proc.poll() is not None:
                raise Failure(f"chromium exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise Failure("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
        port, path = open(port_file).read().split("\n")[:2]
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        self.next_id = 0
        self.pending = {}
        self.events = []
        self.reader = asyncio.create_task(self.read())
        target = await self.cmd("Target.createTarget", {"url": "about:blank"})
        attached = await self.cmd("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            await self.page(f"{domain}.enable")

    async def read(self):
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self.pending:
                self.pending.pop(message["id"]).set_result(message)
            elif "method" in message:
                self.events.append(message)

    async def cmd(self, method, params=None, session=None):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, DEADLINE)
        if "error" in reply:
            raise Failure(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def page(self, method, params=None):
        return await self.cmd(method, params, self.session)

    async def eval(self, expression):
        result = await self.page(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise Failure(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression, what):
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                value = await self.eval(expression)
            except Failure:
                # The page may still be loading (its elements not there yet).
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                state = await self.eval("document.querySelector('#state').textContent")
                rows = await self.eval("[...document.querySelectorAll('#events tbody tr')].slice(0,8).map(r => r.textContent)")
                raise Failure(f"timed out waiting for {what} (state: {state!r}, rows: {rows})")
            await asyncio.sleep(0.05)

    async def shot(self, directory, name):
        data = await self.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"{name}.png"), "wb") as f:
            f.write(base64.b64decode(data["data"]))

    async def close(self):
        try:
            await self.ws.close()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)

    def requests(self):
        urls = [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]
        sockets = [e["params"]["url"] for e in self.events if e["method"] == "Network.webSocketCreated"]
        return urls, sockets

    def errors(self):
        found = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(e["params"]["exceptionDetails"])[:400])
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning"):
                found.append(json.dumps(e["params"]["args"])[:400])
            elif e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"):
                found.append(e["params"]["entry"]["text"][:400])
        return found


def js(value):
    return json.dumps(value)


async def set_value(b, selector, value):
    await b.eval(
        f"(() => {{ const e = document.querySelector({js(selector)}); e.value = {js(value)};"
        " e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )


async def click(b, selector):
    await b.eval(f"document.querySelector({js(selector)}).click()")


def row_with(*needles):
    checks = " && ".join(f"r.textContent.includes({js(n)})" for n in needles)
    return f"[...document.querySelectorAll('#events tbody tr')].some(r => !r.hidden && {checks})"


def curl_publish(addr, key, topic, event, data):
    body = json.dumps({"topic": topic, "event": event, "data": data})
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"http://{addr}/api/v1/publish", "-H", f"X-API-Key: {key}",
         "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, timeout=DEADLINE,
    )
    if out.returncode != 0 or '"events":1' not in out.stdout:
        raise Failure(f"curl publish failed: {out.stdout} {out.stderr}")


def check_requests(b, origins):
    urls, sockets = b.requests()
    outside = [u for u in urls + sockets if not any(u.startswith(o) for o in origins) and not u.startswith("data:")]
    if outside:
        raise Failure(f"the page made requests outside the server: {outside}")
    if not urls:
        raise Failure("no request was recorded: the network log is not working")
    errors = b.errors()
    if errors:
        raise Failure(f"the browser logged errors: {errors}")
    return len(urls), len(sockets)


async def dev(addr, shots):
    b = Browser()
    await b.start()
    try:
        await b.page("Page.navigate", {"url": f"http://{addr}/"})
        # Dev mode: pre-filled, connected at once as a `user` client.
        await b.until("document.querySelector('#state').dataset.state === 'connected'", "the page to connect")
        await b.until(row_with("connected"), "the connected event")
        if await b.eval("document.querySelector('#kind').value") != "type:user":
            raise Failure("dev mode did not connect as a user client")
        print("connected as user")

        # Publish from the page.
        await set_value(b, "#pub-topic", "type:user")
        await set_value(b, "#pub-event", "console.page")
        await set_value(b, "#pub-data", '{"from":"page"}')
        await click(b, "#publish")
        await b.until(row_with("type:user", "console.page"), "the event published from the page")
        await b.until("document.querySelector('#publish-result').textContent.startsWith('202')", "the 202")
        print("published from the page, received")

        # Publish with curl.
        curl_publish(addr, "shardcast-dev-api-key", "all", "console.curl", {"n": 1})
        await b.until(row_with("all", "console.curl"), "the event published with curl")
        print("published with curl, received")
        await b.shot(shots, "events")


        # The newest row's JSON, by keyboard: focus it, press Enter.
        await b.eval("document.querySelector('#events tbody tr').focus()")
        for kind in ("keyDown", "keyUp"):
            await b.page("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13})
        await b.until("document.querySelector('#event-detail').textContent.includes('\"event\": \"console.curl\"')", "the JSON detail")
        print("detail by keyboard")

        # Chromium offers permessage-deflate: the 101 agreed to it, and a
        # large event (compressed once on the server) arrives intact.
        answers = [
            {k.lower(): v for k, v in e["params"]["response"]["headers"].items()}
            for e in b.events
            if e["method"] == "Network.webSocketHandshakeResponseReceived"
        ]
        extensions = answers[0].get("sec-websocket-extensions", "") if answers else ""
        if "permessage-deflate" not in extensions:
            raise Failure(f"no permessage-deflate in the 101: {answers}")
        big = {"items": [{"product_id": i, "product_name": f"Desk lamp {i}", "shop_id": 10} for i in range(60)]}
        curl_publish(addr, "shardcast-dev-api-key", "all", "console.big", big)
        await b.until(row_with("console.big"), "the large event")
        await b.eval(
            "[...document.querySelectorAll('#events tbody tr')].find(r => r.textContent.includes('console.big')).click()"
        )
        await b.until(
            "document.querySelector('#event-detail').textContent.includes('\"product_name\": \"Desk lamp 59\"')",
            "the large event's JSON",
        )
        print(f"permessage-deflate negotiated ({extensions}); a large event arrived intact")

        # Filter, then pause and resume.
        await set_value(b, "#filter", "console.page")
        await b.until(
            "(() => { const v = [...document.querySelectorAll('#events tbody tr')].filter(r => !r.hidden);"
            " return v.length === 1 && v[0].textContent.includes('console.page'); })()",
            "the filter to leave one row",
        )
        await set_value(b, "#filter", "")
        await click(b, "#pause")
        curl_publish(addr, "shardcast-dev-api-key", "all", "console.paused", {"n": 2})
        await b.until("document.querySelector('#held').textContent === 'paused: 1 held'", "a held event")
        if await b.eval(row_with("console.paused")):
            raise Failure("a paused list showed a new event")
        await click(b, "#pause")
        await b.until(row_with("console.paused"), "the held event after resuming")
        print("filter, pause and resume")

        # Invalid JSON cannot be published.
        await set_value(b, "#pub-data", "{bad")
        await b.until(
            "document.querySelector('#publish').disabled && document.querySelector('#pub-error').textContent.includes('not valid JSON')",
            "the JSON error",
        )
        await set_value(b, "#pub-data", "{}")
        await b.until("!document.querySelector('#publish').disabled", "the publish button back")
        print("invalid JSON refused in the page")

        # A batch.
        await b.eval("document.querySelector('#batch-form').closest('details').open = true")
        await click(b, "#publish-batch")
        await b.until(row_with("batch.one") + " && " + row_with("batch.two"), "the batch's events")
        print("batch published, received")

        # Rooms as the connected client.
        await set_value(b, "#room", "lobby")
        await click(b, "#subscribe")
        await b.until("document.querySelector('#joined').textContent.includes('lobby')", "the room joined")
        await set_value(b, "#room-event", "chat")
        await click(b, "#room-publish")
        await b.until(row_with("chat") + " && " + row_with("published"), "the room event")
        await click(b, "#unsubscribe")
        await b.until(row_with("unsubscribed"), "the unsubscribe reply")
        print("room subscribe, publish, unsubscribe")

        # The server panel: stats and the latency plot.
        await b.until("Number(document.querySelector('#stats-total').textContent) >= 1", "the stats")
        await b.until("document.querySelector('#conn-graph polyline') !== null", "the connections graph")
        await click(b, "#latency-refresh")
        await b.until("document.querySelectorAll('#latency-plot circle.point').length > 1", "the latency plot's points")
        points = await b.eval("document.querySelectorAll('#latency-plot circle.point').length")
        await b.eval("document.querySelector('#server-panel').scrollIntoView()")
        await b.shot(shots, "server")
        print(f"stats and latency plot ({points} points)")

        # A device monitor, and a status from the form.
        await set_value(b, "#kind", "monitor-all")
        await click(b, "#connect")
        await b.until(
            "document.querySelector('#state').dataset.state === 'connected' &&"
            " [...document.querySelectorAll('#events tbody tr')].length > 0",
            "the monitor to connect",
        )
        await b.eval("document.querySelector('#status-form').closest('details').open = true")
        await set_value(b, "#status-device", "console-dev-1")
        await set_value(b, "#status-value", "fail")
        await click(b, "#send-status")
        await b.until(row_with("device:console-dev-1", "status fail"), "the device status")
        print("device monitor got the status")

        # Closing shows the code.
        await click(b, "#disconnect")
        await b.until(
            "document.querySelector('#state').dataset.state === 'closed' && document.querySelector('#state').textContent.includes('1000')",
            "closed 1000",
        )
        print("closed with code 1000")

        # A phone-sized screen: nothing wider than the screen.
        await b.page("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        await b.until("document.documentElement.scrollWidth <= window.innerWidth", "the page to fit a phone")
        await b.eval("window.scrollTo(0, 0)")
        await b.shot(shots, "phone")
        print("fits a 390 px screen")

        n, s = check_requests(b, [f"http://{addr}/", f"ws://{addr}/"])
        print(f"{n} requests and {s} WebSockets, all to the server; no browser error")
    finally:
        await b.close()


async def admin(admin_addr, public_addr, shots, token, key):
    b = Browser()
    await b.start()
    try:
        await b.page("Page.navigate", {"url": f"http://{admin_addr}/"})
        await b.until("document.querySelector('#ws-base').value !== ''", "the page to start")
        # Not dev mode: nothing pre-filled, no connection until asked.
        filled = await b.eval("[document.querySelector('#token').value, document.querySelector('#api-key').value]")
        if filled != ["", ""]:
            raise Failure(f"a production console came pre-filled: {filled}")
        if await b.eval("document.querySelector('#state').dataset.state") not in (None, "closed"):
            raise Failure("a production console connected without a token")
        base = await b.eval("document.querySelector('#ws-base').value")
        if base != f"ws://{public_addr}":
            raise Failure(f"the WebSocket base is {base}, not the public port ws://{public_addr}")
        await set_value(b, "#token", token)
        await set_value(b, "#api-key", key)
        await click(b, "#connect")
        await b.until("document.querySelector('#state').dataset.state === 'connected'", "the page to connect")
        await set_value(b, "#pub-event", "console.admin")
        await click(b, "#publish")
        await b.until(row_with("console.admin"), "the event published from the admin console")
        await b.until("Number(document.querySelector('#stats-total').textContent) >= 1", "the stats")
        await b.shot(shots, "admin")
        print("admin console: connected to the public port, published through the admin port")
        n, s = check_requests(b, [f"http://{admin_addr}/", f"ws://{public_addr}/"])
        print(f"{n} requests and {s} WebSockets, all to the server; no browser error")
    finally:
        await b.close()


def main():
    mode = sys.argv[1]
    if mode == "dev":
        asyncio.run(dev(sys.argv[2], sys.argv[3]))
    elif mode == "admin":
        asyncio.run(admin(*sys.argv[2:7]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("console: all checks passed")


if __name__ == "__main__":
    main()
