// Node `ws` with the broadcast loop from its README, for bench/compare.
// Run with: node server.js [PORT]   (prints "ws listening on 127.0.0.1:PORT")
// /ws/* connections all receive every event (the benchmark publishes to one
// topic they share); POST /api/v1/publish builds the envelope once and loops
// over the clients calling ws.send (which frames per client). No auth.
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
let nextId = 0;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/v1/publish') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try { body = JSON.parse(Buffer.concat(chunks)); } catch (e) {
      reply(res, 400, '{"error":"bad_json"}');
      return;
    }
    const envelope = JSON.stringify({ event: body.event, timestamp: new Date().toISOString(), data: body.data });
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(envelope);
    }
    reply(res, 202, '{"id":"' + (nextId++) + '"}');
  });
});
server.keepAliveTimeout = 120000;

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

server.on('upgrade', (req, socket, head) => {
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

server.listen(port, '127.0.0.1', () => {
  console.log('ws listening on 127.0.0.1:' + server.address().port);
});
