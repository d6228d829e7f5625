"""Python `websockets` (permessage-deflate on by default) against a running
shardcast (dev mode): the extension is negotiated, compressed and plain
events arrive intact, and the client's own compressed messages are read.

Run by tests/compression.rs as: python compression.py HOST:PORT
Prints one line per check and exits non-zero on the first failure.
"""
import asyncio, json, sys, time, urllib.request

import jwt
import websockets

ADDR = sys.argv[1]
SECRET = "shardcast-dev-secret-NOT-FOR-PRODUCTION"
KEY = "shardcast-dev-api-key"


def token(sub):
    claims = {"sub": sub, "exp": int(time.time()) + 600, "types": ["user"]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def publish(body):
    req = urllib.request.Request(f"http://{ADDR}/api/v1/publish", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def check(ok, what):
    if not ok:
        print(f"FAILED: {what}")
        sys.exit(1)
    print(f"ok: {what}")


async def main():
    url = f"ws://{ADDR}/ws/user?token={token('py-deflate')}"
    async with websockets.connect(url, open_timeout=10) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        check("permessage-deflate" in ext, f"permessage-deflate negotiated ({ext})")
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        check(hello["event"] == "connected", "connected event")
        big = {"product_id": 1, "product_name": "Lamp " * 200, "shop_id": 10}
        small = {"product_id": 2}
        check(publish({"topic": "user:py-deflate", "event": "product.approved", "data": big}) == 202, "big publish")
        check(publish({"topic": "user:py-deflate", "event": "product.approved", "data": small}) == 202, "small publish")
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        second = json.loads(await asyncio.wait_for(ws.recv(), 10))
        check(first["data"] == big, "a compressed event arrives intact")
        check(second["data"] == small, "a plain event after it arrives intact")
        # The client compresses what it sends; padding makes it worth it.
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 4000}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
        check(pong.get("type") == "pong", "a compressed client message is inflated and answered")
    print("compression: all checks passed")


asyncio.run(main())
