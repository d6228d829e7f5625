"""Real Python clients against a running shardcast (dev mode): tokens minted
with PyJWT, connections with `websockets`, publishes with urllib.

Run by tests/python_clients.rs as: python clients.py HOST:PORT
Prints one line per check and exits non-zero on the first failure.
"""
import asyncio, json, sys, time, urllib.parse, urllib.request, urllib.error

import jwt
import websockets

ADDR = sys.argv[1]
SECRET = "shardcast-dev-secret-NOT-FOR-PRODUCTION"
KEY = "shardcast-dev-api-key"


def token(sub, **extra):
    claims = {"sub": sub, "exp": int(time.time()) + 600, "types": ["user"], **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def publish(body):
    req = urllib.request.Request(f"http://{ADDR}/api/v1/publish", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


async def status_of(url, headers=None):
    try:
        async with websockets.connect(url, additional_headers=headers or {}, open_timeout=10):
            return 101
    except websockets.exceptions.InvalidStatus as e:
        return e.response.status_code


async def main():
    url = f"ws://{ADDR}/ws/user"
    async with websockets.connect(f"{url}?token={token('py-alice')}", open_timeout=10) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["event"] == "connected" and hello["data"]["user_id"] == "py-alice", hello
        print("pyjwt token over ?token= accepted")
        assert publish({"topic": "user:py-alice", "event": "product.approved", "data": {"product_id": 7}}) == 202
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["event"] == "product.approved" and event["data"] == {"product_id": 7}, event
        print("publish reached the python client")
        await ws.send(json.dumps({"type": "ping"}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert pong["type"] == "pong", pong
        print("ping/pong")
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token('py-bob')}"}, open_timeout=10) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["data"]["user_id"] == "py-bob", hello
        print("pyjwt token over Authorization accepted")
    expired = jwt.encode({"sub": "x", "exp": int(time.time()) - 30, "types": ["user"]}, SECRET, algorithm="HS256")
    assert await status_of(f"{url}?token={expired}") == 401
    print("expired pyjwt token: 401")
    none = jwt.encode({"sub": "x", "exp": int(time.time()) + 600, "types": ["user"]}, None, algorithm="none")
    assert await status_of(f"{url}?token={none}") == 401
    print("alg none: 401")
    other = jwt.encode({"sub": "x", "exp": int(time.time()) + 600, "types": ["user"]}, "wrong-secret", algorithm="HS256")
    assert await status_of(f"{url}?token={other}") == 401
    print("wrong signature: 401")
    no_type = jwt.encode({"sub": "x", "exp": int(time.time()) + 600, "types": ["shop"]}, SECRET, algorithm="HS256")
    assert await status_of(f"{url}?token={no_type}") == 403
    print("valid token without the type: 403")
    no_exp = jwt.encode({"sub": "x", "types": ["user"]}, SECRET, algorithm="HS256")
    assert await status_of(f"{url}?token={no_exp}") == 401
    print("token without exp: 401")
    await reconnect_with_since(url)
    print("python clients: all checks passed")


async def reconnect_with_since(url):
    """A client that tracks its position, drops, and comes back with ?since=."""
    async with websockets.connect(f"{url}?token={token('py-carol')}", open_timeout=10) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        position = hello["data"]["positions"]["user:py-carol"]
        assert publish({"topic": "user:py-carol", "event": "seen", "data": 0}) == 202
        seen = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert seen["offset"] == position["offset"] + 1 and seen["epoch"] == position["epoch"], seen
        position = {"epoch": seen["epoch"], "offset": seen["offset"]}
    for n in range(1, 6):
        assert publish({"topic": "user:py-carol", "event": "missed", "data": n}) == 202
    since = urllib.parse.quote(json.dumps({"user:py-carol": position}))
    async with websockets.connect(f"{url}?token={token('py-carol')}&since={since}", open_timeout=10) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        recovery = hello["data"]["recovery"]["user:py-carol"]
        assert recovery["recovered"] is True, hello
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(5)]
        assert [e["data"] for e in got] == [1, 2, 3, 4, 5], got
        assert [e["offset"] for e in got] == list(range(position["offset"] + 1, position["offset"] + 6)), got
    print("reconnect with since: the 5 missed events, in order")
    assert await status_of(f"{url}?token={token('py-carol')}&since=%7Bnope") == 400
    print("malformed since: 400")


asyncio.run(main())
