"""Python `websockets` over wss:// against the TLS port: the client trusts
the test CA and gets its event; a client trusting another CA refuses the
server. Usage: tls.py HOST:PORT CA_PEM OTHER_CA_PEM TOKEN"""
import asyncio
import json
import ssl
import sys
import urllib.request

import websockets

ADDR, CA, OTHER_CA, TOKEN = sys.argv[1:5]
PORT = ADDR.rsplit(":", 1)[1]
URL = f"wss://localhost:{PORT}/ws/user?token={TOKEN}"


async def main():
    trusting = ssl.create_default_context(cafile=CA)
    async with websockets.connect(URL, ssl=trusting) as ws:
        connected = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert connected["event"] == "connected", connected
        body = json.dumps({"topic": "all", "event": "product.approved", "data": {"id": 42}}).encode()
        request = urllib.request.Request(
            f"https://localhost:{PORT}/api/v1/publish",
            data=body,
            headers={"Authorization": "Bearer shardcast-dev-api-key", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=trusting, timeout=10) as reply:
            assert reply.status == 202, reply.status
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["event"] == "product.approved" and event["data"] == {"id": 42}, event
    print("wss: event received")
    wrong = ssl.create_default_context(cafile=OTHER_CA)
    try:
        async with websockets.connect(URL, ssl=wrong):
            raise SystemExit("a client trusting another CA connected")
    except ssl.SSLCertVerificationError as error:
        print("wrong CA refused:", error.verify_message)
    print("python tls: all checks passed")


asyncio.run(main())
