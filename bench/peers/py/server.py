"""Python `websockets` with `websockets.broadcast`, for bench/compare.

Run with: python server.py
(prints "py listening on 127.0.0.1:WSPORT publish on 127.0.0.1:HTTPPORT")

websockets serves WebSocket only, so publishing has its own small asyncio
HTTP listener: POST /api/v1/publish builds the envelope once and calls
websockets.broadcast over every connection (the benchmark publishes to one
topic they all share). No auth.
"""
import asyncio, datetime, json

import websockets
from websockets.asyncio.server import serve, broadcast

CONNECTIONS = set()


async def subscriber(ws):
    CONNECTIONS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


def envelope(body):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"event": body["event"], "timestamp": now, "data": body["data"]}, separators=(",", ":"))


async def publisher(reader, writer):
    next_id = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            try:
                text = envelope(json.loads(body))
                broadcast(CONNECTIONS, text)
                status, reply = "202 Accepted", '{"id":"%d"}' % next_id
            except (ValueError, KeyError):
                status, reply = "400 Bad Request", '{"error":"bad_json"}'
            next_id += 1
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(reply)}\r\n\r\n{reply}".encode())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    async with serve(subscriber, "127.0.0.1", 0, compression=None, ping_interval=None,
                     max_queue=None) as ws_server:
        http = await asyncio.start_server(publisher, "127.0.0.1", 0)
        ws_port = ws_server.sockets[0].getsockname()[1]
        http_port = http.sockets[0].getsockname()[1]
        print(f"py listening on 127.0.0.1:{ws_port} publish on 127.0.0.1:{http_port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
