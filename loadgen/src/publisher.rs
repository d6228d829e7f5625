//! Open-loop HTTP publisher: event `i` is scheduled at `start + i / rate`
//! and carries that time, so latency is measured from when it should have
//! been sent (no coordinated omission). Two modes:
//! - pipelined: every request on one keep-alive connection as its time
//!   comes, a reader thread checking the answers;
//! - sequential: like most backends' HTTP clients, each of `publishers`
//!   connections sends its next event only after the previous answer
//!   (event `i` goes out on connection `i % publishers`), still timed from
//!   its schedule, so a slow answer shows up as latency.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::payload;

/// Longest wait for the next answer before the publisher gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What to publish.
pub struct PublishPlan {
    /// Nodes to publish to: sequential publisher `k` uses node `k % n`
    /// (each keeps its own order); pipelined uses the first.
    pub targets: Vec<SocketAddr>,
    pub api_key: String,
    pub topic: String,
    pub events: u64,
    /// The first event's sequence number (events `first..events` are sent;
    /// the schedule starts at `first`).
    pub first: u64,
    /// Events per second; `None` sends them back to back (a burst).
    pub rate: Option<f64>,
    pub payload_bytes: usize,
    pub mode: Mode,
    /// Concurrent sequential publishers (1 when pipelined).
    pub publishers: usize,
}

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// All requests on one connection, not waiting for answers.
    Pipelined,
    /// Each request after the previous answer on its connection.
    Sequential,
}

/// How publishing went.
pub struct Published {
    /// Requests answered 2xx.
    pub accepted: u64,
    /// First non-2xx answer, if any.
    pub error: Option<String>,
    /// Wall-clock ns when the first event was scheduled.
    pub start_ns: u64,
}

/// Publishes every event of `plan`; returns once all answers are read.
pub fn run(plan: &PublishPlan) -> std::io::Result<Published> {
    match plan.mode {
        Mode::Pipelined => pipelined(plan),
        Mode::Sequential => sequential(plan),
    }
}

/// The request publishing event `seq`, scheduled `ts` ns (wall clock).
fn request(plan: &PublishPlan, seq: u64, ts: u64) -> String {
    let body = format!(
        r#"{{"topic":"{}","event":"product.approved","data":{}}}"#,
        plan.topic,
        payload::data(seq, ts, plan.payload_bytes)
    );
    format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        plan.targets[0],
        plan.api_key,
        body.len()
    )
}

/// `publishers` threads, each sending its share one request at a time.
fn sequential(plan: &PublishPlan) -> std::io::Result<Published> {
    let n = plan.publishers.max(1) as u64;
    let start = Instant::now();
    let start_ns = payload::now_ns();
    let results: Vec<std::io::Result<(u64, Option<String>)>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .map(|k| {
                scope.spawn(move || -> std::io::Result<(u64, Option<String>)> {
                    let target = plan.targets[k as usize % plan.targets.len()];
                    let (mut stream, mut reader) = open(target)?;
                    let (mut accepted, mut error) = (0, None);
                    for seq in (plan.first + k..plan.events).step_by(n as usize) {
                        let offset = plan.rate.map_or(Duration::ZERO, |rate| {
                            Duration::from_secs_f64((seq - plan.first) as f64 / rate)
                        });
                        if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let ts = start_ns + offset.as_nanos() as u64;
                        let req = request(plan, seq, ts);
                        let mut answer = ask(&mut stream, &mut reader, &req);
                        if answer.as_ref().is_err_and(|e| e == CLOSED) {
                            // A server may close an idle keep-alive connection
                            // (shardcast does under socket pressure) before
                            // reading the request: reconnect and send it again.
                            // A server that is gone ends this publisher, keeping
                            // what it accepted.
                            answer = match open(target) {
                                Ok(fresh) => {
                                    (stream, reader) = fresh;
                                    ask(&mut stream, &mut reader, &req)
                                }
                                Err(e) => Err(format!("cannot reconnect: {e}")),
                            };
                        }
                        if !tally(answer, &mut accepted, &mut error) {
                            break;
                        }
                    }
                    Ok((accepted, error))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Ok((0, Some("publisher thread panicked".into()))))
            })
            .collect()
    });
    let mut published = Published {
        accepted: 0,
        error: None,
        start_ns,
    };
    for result in results {
        let (accepted, error) = result?;
        published.accepted += accepted;
        if published.error.is_none() {
            published.error = error;
        }
    }
    Ok(published)
}

fn pipelined(plan: &PublishPlan) -> std::io::Result<Published> {
    let stream = TcpStream::connect(plan.targets[0])?;
    stream.set_nodelay(true)?;
    let reader = stream.try_clone()?;
    // A server that stops answering must not stall the run.
    reader.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let events = plan.events.saturating_sub(plan.first);
    let answers = thread::spawn(move || read_answers(reader, events));
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, stream);
    let start = Instant::now();
    let start_ns = payload::now_ns();
    // A failed write (the server gone) ends the sending; the answers read
    // so far still count.
    let mut written = Ok(());
    for seq in plan.first..plan.events {
        let offset = match plan.rate {
            Some(rate) => Duration::from_secs_f64((seq - plan.first) as f64 / rate),
            None => Duration::ZERO,
        };
        if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
            written = writer.flush();
            if written.is_err() {
                break;
            }
            thread::sleep(wait);
        }
        let ts = start_ns + offset.as_nanos() as u64;
        written = writer.write_all(request(plan, seq, ts).as_bytes());
        if written.is_ok() && plan.rate.is_some() {
            written = writer.flush();
        }
        if written.is_err() {
            break;
        }
    }
    if written.is_ok() {
        written = writer.flush();
    }
    if written.is_err() {
        // Unblock the reader waiting for answers that cannot come.
        let _ = writer.get_ref().shutdown(std::net::Shutdown::Both);
    }
    let (accepted, mut error) = answers
        .join()
        .unwrap_or((0, Some("answer reader panicked".into())));
    if let Err(e) = written {
        error.get_or_insert(format!("publish write failed: {e}"));
    }
    Ok(Published {
        accepted,
        error,
        start_ns,
    })
}

/// Reads `count` HTTP responses; returns (2xx count, first error).
fn read_answers(stream: TcpStream, count: u64) -> (u64, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut accepted = 0;
    let mut error = None;
    for _ in 0..count {
        if !tally(read_answer(&mut reader), &mut accepted, &mut error) {
            break;
        }
    }
    (accepted, error)
}

/// What [`read_answer`] says of a connection the server closed.
const CLOSED: &str = "publisher connection closed";

/// A keep-alive connection to `target` and its reader.
fn open(target: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(target)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Sends one request and reads its answer (a failed write reads as closed).
fn ask(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    req: &str,
) -> Result<Option<String>, String> {
    if stream.write_all(req.as_bytes()).is_err() {
        return Err(CLOSED.to_string());
    }
    read_answer(reader)
}

/// Counts one answer: a 2xx is accepted, the first refusal or failure is
/// kept; false when no more answers can come (the connection failed).
fn tally(answer: Result<Option<String>, String>, accepted: &mut u64, error: &mut Option<String>) -> bool {
    match answer {
        Ok(None) => *accepted += 1,
        Ok(Some(refusal)) => {
            error.get_or_insert(refusal);
        }
        Err(e) => {
            error.get_or_insert(e);
            return false;
        }
    }
    true
}

/// Reads one HTTP response: `Ok(None)` for 2xx, `Ok(Some(refusal))` with
/// the status and body of any other; `Err` when no answer came (closed, or
/// not in time).
fn read_answer(reader: &mut impl BufRead) -> Result<Option<String>, String> {
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Err(CLOSED.to_string()),
        Err(e) => {
            return Err(format!(
                "no answer to a publish request within {ANSWER_TIMEOUT:?}: {e}"
            ))
        }
        Ok(_) => {}
    }
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        read_chunked(reader)
    } else {
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        body
    };
    if status.split(' ').nth(1).is_some_and(|s| s.starts_with('2')) {
        Ok(None)
    } else {
        Ok(Some(format!(
            "{} {}",
            status.trim(),
            String::from_utf8_lossy(&body)
        )))
    }
}

/// A `Transfer-Encoding: chunked` body (some servers answer that way).
fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
        if n == 0 {
            // Trailers end with an empty line.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            return body;
        }
        let start = body.len();
        body.resize(start + n, 0);
        let _ = reader.read_exact(&mut body[start..]);
        let mut crlf = [0u8; 2];
        let _ = reader.read_exact(&mut crlf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_read_whole() {
        let mut input: &[u8] = b"a\r\n{\"id\":\"0\"}\r\n3;x=y\r\nabc\r\n0\r\n\r\nNEXT";
        assert_eq!(read_chunked(&mut input), b"{\"id\":\"0\"}abc");
        assert_eq!(input, b"NEXT");
    }
}
