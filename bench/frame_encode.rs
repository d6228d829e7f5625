//! CPU cost of turning one published event into its shared frame, once per
//! event (never per delivery): envelope + header into one buffer, and
//! parsing a publish body.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::api::publish;
use shardcast::proto::frame::{self, Data, OpCode};

const TS: &str = "2026-01-01T12:00:00.000Z";

fn body() -> String {
    format!(
        r#"{{"topic":"type:user","event":"product.approved","data":{{"product_id":123,"product_name":"{}","shop_id":10}}}}"#,
        "p".repeat(300)
    )
}

fn encode_400_byte_event_once(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let payload = vec![b'x'; 400];
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("frame a 400-byte payload", |b| {
        b.iter(|| frame::encode_shared(OpCode::Data(Data::Text), &payload))
    });
    let template = body().into_bytes();
    let types = ["user".to_string()];
    let rules = publish::Rules {
        max_depth: 128,
        max_events: 1000,
        client_types: &types,
    };
    g.bench_function("parse a publish body and build its frame", |b| {
        b.iter_batched(
            || template.clone(),
            |mut body| publish::parse_one(&mut body, TS, rules).expect("valid body"),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode_400_byte_event_once);
criterion_main!(benches);
