//! CPU cost of permessage-deflate's one compression per event (never per
//! delivery): a 400 B `product.approved` envelope and a 4 KiB one, at the
//! default level 1 and at 6, and the compressed size of each (printed once).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::proto::deflate::Codec;
use shardcast::proto::frame::{Data, OpCode};

/// An event envelope as subscribers receive it, about `bytes` long: JSON
/// with the repetition real events have (keys, ids, prose), not one byte.
fn envelope(bytes: usize) -> Vec<u8> {
    let mut items = String::new();
    let mut i = 0u32;
    while items.len() + 200 < bytes {
        if !items.is_empty() {
            items.push(',');
        }
        items.push_str(&format!(
            r#"{{"product_id":{},"product_name":"Desk lamp model {}","shop_id":{},"price_cents":{},"tags":["home","light"]}}"#,
            123_400 + i * 7,
            i * 31 % 97,
            10 + i % 5,
            1999 + i * 13
        ));
        i += 1;
    }
    format!(
        r#"{{"event":"product.approved","topic":"type:user","offset":41,"epoch":"k3Jd9xQa","timestamp":"2026-12-02T07:20:11.204Z","data":{{"approved_by":"moderator-7","items":[{items}]}}}}"#
    )
    .into_bytes()
}

fn compress_one_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    for size in [400usize, 4096] {
        let payload = envelope(size);
        for level in [1u32, 2, 6] {
            let mut codec = Codec::new(level);
            let frame = codec
                .frame(OpCode::Data(Data::Text), &payload)
                .expect("JSON compresses");
            eprintln!(
                "{} B event, level {level}: {} B frame ({:.2} of the plain payload)",
                payload.len(),
                frame.len(),
                frame.len() as f64 / payload.len() as f64
            );
            g.throughput(Throughput::Bytes(payload.len() as u64));
            g.bench_function(format!("{} B event, level {level}", payload.len()), |b| {
                b.iter(|| codec.frame(OpCode::Data(Data::Text), &payload))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, compress_one_event);
criterion_main!(benches);
