//! The publish path with history on and off, per event: framing a 400 B
//! envelope alone (history off) against framing it with its place and
//! retaining it (history on, 100 kept per topic, 1 or 1,000 topics). Also
//! prints the memory one retained event costs beyond its shared frame.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shardcast::config::history::{Kinds, Limits};
use shardcast::fanout::envelope::Envelope;
use shardcast::fanout::history::Streams;

fn limits() -> Limits {
    Limits {
        size: 100,
        ttl: Duration::from_secs(300),
        max_bytes: 1 << 30,
        kinds: Kinds {
            all: true,
            types: true,
            users: true,
            rooms: true,
        },
    }
}

fn envelope() -> Envelope {
    let data = format!(
        r#"{{"product_id":123,"product_name":"Lamp","shop_id":10,"pad":"{}"}}"#,
        "x".repeat(280)
    );
    let data: simd_json::OwnedValue = simd_json::to_owned_value(&mut data.into_bytes()).unwrap();
    Envelope::new(
        "product.approved",
        Some("type:user"),
        "2026-12-02T07:00:00.000Z",
        &data,
    )
}

fn bench(c: &mut Criterion) {
    let e = envelope();
    let mut g = c.benchmark_group("publish_path_per_event");
    g.bench_function("history_off", |b| b.iter(|| e.frame(None)));
    for topics in [1usize, 1000] {
        let names: Vec<String> = (0..topics).map(|i| format!("user:u{i}")).collect();
        let mut streams = Streams::new(limits());
        let mut i = 0usize;
        g.bench_function(format!("history_on_{topics}_topics"), |b| {
            b.iter(|| {
                let seq = streams.next_seq();
                i += 1;
                streams.append(&names[i % topics], seq, Instant::now(), u64::MAX, |p| {
                    e.frame(Some(p))
                })
            })
        });
    }
    g.finish();

    // Memory: fill 1,000 topics × 100 events, then count what the streams
    // hold beyond the frames themselves.
    let mut streams = Streams::new(limits());
    let mut frame_bytes = 0usize;
    for n in 0..100_000usize {
        let seq = streams.next_seq();
        let f = streams.append(
            &format!("user:u{}", n % 1000),
            seq,
            Instant::now(),
            u64::MAX,
            |p| e.frame(Some(p)),
        );
        frame_bytes += f.len();
    }
    let (bytes, count, _) = streams.usage();
    eprintln!(
        "history memory: {count} topics, 100,000 events: {} B accounted, {} B of it frames; \
         {:.0} B per retained event beyond its frame (frame ~{} B, shared with the fan-out)",
        bytes,
        frame_bytes,
        (bytes - frame_bytes) as f64 / 100_000.0,
        frame_bytes / 100_000
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
