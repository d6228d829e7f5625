//! Benchmark peer: the server a Rust user would write instead of shardcast —
//! tokio (multi-threaded), tokio-tungstenite, one `tokio::sync::broadcast`
//! channel. Every connection on `/ws/*` gets every published event (the
//! benchmark publishes to one topic all connections share); `POST
//! /api/v1/publish` encodes the envelope once and sends it to the channel;
//! each connection's task frames and writes it. No auth.
//!
//! Run with: peer-tokio [PORT]   (prints "tokio listening on 127.0.0.1:PORT")

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0u16);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("tokio listening on {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Utf8Bytes>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true).ok();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 4];
            if stream.peek(&mut first).await.is_ok() && &first == b"POST" {
                publisher(stream, tx).await;
            } else {
                subscriber(stream, tx.subscribe()).await;
            }
        });
    }
}

/// Reads pipelined publish requests on one keep-alive connection.
async fn publisher(mut stream: TcpStream, tx: broadcast::Sender<Utf8Bytes>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut id = 0u64;
    loop {
        while let Some((head, used)) = peers::parse_head(&buf) {
            if buf.len() < used + head.content_length {
                break;
            }
            let envelope = peers::envelope(&buf[used..used + head.content_length]);
            buf.drain(..used + head.content_length);
            let ok = envelope.is_some();
            if let Some(e) = envelope {
                let _ = tx.send(Utf8Bytes::from(e));
            }
            id += 1;
            if stream
                .write_all(peers::publish_reply(ok, id).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One WebSocket subscriber: forwards every broadcast event.
async fn subscriber(stream: TcpStream, mut rx: broadcast::Receiver<Utf8Bytes>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut incoming) = ws.split();
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
