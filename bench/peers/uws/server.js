// uWebSockets.js pub/sub with shardcast's fan-out endpoints, for bench/compare.
// Run with: node server.js [PORT]   (prints "uws listening on 127.0.0.1:PORT")
// /ws/:type subscribes to all, type:{type}; POST /api/v1/publish encodes the
// envelope once and calls app.publish (uWS fans out in C++). No auth: the peer
// is measured on the data path only.
const uWS = require('@trufflesuite/uws-js-unofficial');

const port = Number(process.argv[2] || 0);
// UWS_TLS_CERT/UWS_TLS_KEY: the WebSocket port is an SSLApp (uws-tls in
// bench/compare); publishes then come in on a plain App beside it, which
// publishes into the SSLApp's topic tree.
const certFile = process.env.UWS_TLS_CERT;
const app = certFile
  ? uWS.SSLApp({ cert_file_name: certFile, key_file_name: process.env.UWS_TLS_KEY })
  : uWS.App();
const api = certFile ? uWS.App() : app;
let nextId = 0;

// UWS_COMPRESSION=shared: permessage-deflate with one shared compressor
// (uws-deflate in bench/compare): a publish is compressed once.
const compression = process.env.UWS_COMPRESSION === 'shared' ? uWS.SHARED_COMPRESSOR : uWS.DISABLED;

app.ws('/ws/:type', {
  compression,
  idleTimeout: 120,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 1024 * 1024,
  upgrade: (res, req, context) => {
    res.upgrade({ type: req.getParameter(0) },
      req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => {
    const type = ws.getUserData().type;
    ws.subscribe('all');
    ws.subscribe('type:' + type);
    ws.send(JSON.stringify({ event: 'connected', timestamp: new Date().toISOString(),
      data: { connection_id: String(nextId++), client_type: type } }));
  },
  message: (ws, message, isBinary) => {},
});

api.post('/api/v1/publish', (res, req) => {
  const chunks = [];
  res.onAborted(() => {});
  res.onData((chunk, last) => {
    chunks.push(Buffer.from(new Uint8Array(chunk)));  // copy: uWS reuses the buffer
    if (!last) return;
    let body;
    try { body = JSON.parse(Buffer.concat(chunks)); } catch (e) {
      res.writeStatus('400 Bad Request').end('{"error":"bad_json"}');
      return;
    }
    const envelope = JSON.stringify({ event: body.event, timestamp: new Date().toISOString(), data: body.data });
    app.publish(body.topic, envelope, false, compression !== uWS.DISABLED);
    res.writeStatus('202 Accepted').writeHeader('Content-Type', 'application/json').end('{"id":"' + (nextId++) + '"}');
  });
});

app.listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws: cannot listen'); process.exit(1); }
  const wsPort = uWS.us_socket_local_port(token);
  if (api === app) {
    console.log('uws listening on 127.0.0.1:' + wsPort);
    return;
  }
  api.listen('127.0.0.1', 0, (apiToken) => {
    if (!apiToken) { console.error('uws: cannot listen (publish port)'); process.exit(1); }
    console.log('uws listening on 127.0.0.1:' + wsPort + ' publish on 127.0.0.1:' + uWS.us_socket_local_port(apiToken));
  });
});
