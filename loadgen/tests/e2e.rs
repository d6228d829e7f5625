//! Short end-to-end runs of every scenario against the real `shardcast`
//! binary (`--spawn`): the figures add up, nothing is lost, the output
//! files are written, and refused connections are reported with the
//! server's reason.

use std::path::PathBuf;
use std::process::{Command, Output};

use simd_json::prelude::*;
use simd_json::OwnedValue;

/// The shardcast binary next to loadgen's, built if this test runs alone.
fn shardcast() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("shardcast");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", "shardcast", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building shardcast failed");
    }
    bin
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--spawn")
        .arg("--server-bin")
        .arg(shardcast())
        .args(["--shards", "2"])
        .output()
        .expect("loadgen runs")
}

fn json(path: &PathBuf) -> OwnedValue {
    let mut text = std::fs::read(path).expect("json written");
    simd_json::to_owned_value(&mut text).expect("valid json")
}

fn num(v: &OwnedValue, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn product_approved_delivers_every_event_and_writes_every_output() {
    let (j, h, s) = (scratch("pa.json"), scratch("pa.hgrm"), scratch("pa.svg"));
    let out = loadgen(&[
        "product-approved",
        "--conns",
        "200",
        "--events",
        "40",
        "--rate",
        "400",
        "--workers",
        "2",
        "--json",
        j.to_str().unwrap(),
        "--hgrm",
        h.to_str().unwrap(),
        "--svg",
        s.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let r = json(&j);
    assert_eq!(num(&r, "connected"), 200);
    assert_eq!(num(&r, "published"), 40);
    assert_eq!(num(&r, "expected_deliveries"), 200 * 40);
    assert_eq!(num(&r, "deliveries"), 200 * 40);
    assert_eq!(num(&r, "lost"), 0);
    assert_eq!(num(&r, "duplicates"), 0);
    let p99 = r
        .get("latency_us")
        .and_then(|l| l.get("p99"))
        .and_then(|v| v.as_f64())
        .unwrap();
    assert!(p99 > 0.0, "a p99 was measured");
    // The offered load, and where and when the run was made.
    let f = |v: Option<&simd_json::OwnedValue>| v.and_then(|v| v.as_f64());
    assert_eq!(f(r.get("offered_events_per_sec")), Some(400.0));
    assert_eq!(f(r.get("offered_deliveries_per_sec")), Some(400.0 * 200.0));
    let run = r.get("run").unwrap();
    for key in ["timestamp", "kernel", "host"] {
        assert!(
            !run.get(key).and_then(|v| v.as_str()).unwrap_or("").is_empty(),
            "run.{key}"
        );
    }
    assert!(r.get("p99").is_none(), "no duplicate p99 at the top level");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("at 400 events/s") && table.contains("offered load 80000/s"),
        "{table}"
    );
    assert!(table.contains("samples"), "{table}");
    let svg = std::fs::read_to_string(&s).unwrap();
    assert!(
        svg.contains("200/200 connections, 40 events of 400 B at 400 events/s"),
        "{svg}"
    );
    assert!(r
        .get("command")
        .and_then(|c| c.as_str())
        .unwrap()
        .contains("--conns 200"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("send → receive") && table.contains("lost 0"),
        "{table}"
    );
    let hgrm = std::fs::read_to_string(&h).unwrap();
    assert!(
        hgrm.starts_with("       Value     Percentile TotalCount"),
        "{hgrm}"
    );
    // 200 × 40 deliveries less the 2-event warm-up.
    assert!(
        hgrm.contains(&format!("Total count    = {:12}", 200 * 38)),
        "{hgrm}"
    );
    let svg = std::fs::read_to_string(&s).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
}

#[test]
fn device_status_reaches_all_and_single_device_monitors() {
    let j = scratch("ds.json");
    let out = loadgen(&[
        "device-status",
        "--conns",
        "100",
        "--devices",
        "10",
        "--events",
        "30",
        "--rate",
        "300",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let r = json(&j);
    // 50 monitors of all devices see 30 statuses each; 50 single-device
    // monitors (5 per device) see their device's 3.
    assert_eq!(num(&r, "expected_deliveries"), 50 * 30 + 50 * 3);
    assert_eq!(num(&r, "deliveries"), 50 * 30 + 50 * 3);
    assert_eq!(num(&r, "lost"), 0);
    assert_eq!(num(&r, "devices"), 10);
}

#[test]
fn connect_storm_reports_handshake_rate_and_times() {
    let j = scratch("cs.json");
    let out = loadgen(&["connect-storm", "--conns", "400", "--json", j.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let r = json(&j);
    assert_eq!(num(&r, "connected"), 400);
    assert!(r.get("handshakes_per_sec").and_then(|v| v.as_f64()).unwrap() > 0.0);
    let p99 = r
        .get("handshake_us")
        .and_then(|h| h.get("p99"))
        .and_then(|v| v.as_f64());
    assert!(p99.unwrap() > 0.0);
}

#[test]
fn connections_past_the_server_limit_are_reported_with_its_reason() {
    let j = scratch("refused.json");
    let out = loadgen(&[
        "product-approved",
        "--conns",
        "60",
        "--events",
        "5",
        "--rate",
        "100",
        "--server-arg=--max-connections=40",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = json(&j);
    assert_eq!(num(&r, "connected"), 40, "the limit is exact across shards");
    assert_eq!(num(&r, "connect_errors"), 20);
    assert_eq!(num(&r, "lost"), 0, "the connected ones got everything");
    let refusals = r.get("refusals").unwrap().as_object().unwrap();
    let (reason, count) = refusals.iter().next().unwrap();
    assert!(
        reason.contains("503")
            && reason.contains("Retry-After 5")
            && reason.contains("connection limit (40)"),
        "{reason}"
    );
    assert_eq!(count.as_u64(), Some(20));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("refused 20×"), "{table}");
}

#[test]
fn a_server_that_is_not_there_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "product-approved",
            "--conns",
            "5",
            "--target",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("refused 5× connection refused"), "{table}");
}

#[test]
fn sequential_publishers_wait_for_each_answer_and_lose_nothing() {
    let j = scratch("seq.json");
    let out = loadgen(&[
        "product-approved",
        "--conns",
        "50",
        "--events",
        "40",
        "--rate",
        "max",
        "--publisher",
        "sequential",
        "--publishers",
        "4",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let r = json(&j);
    assert_eq!(num(&r, "published"), 40);
    assert_eq!(num(&r, "deliveries"), 50 * 40);
    assert_eq!(num(&r, "lost"), 0);
    assert_eq!(num(&r, "duplicates"), 0);
    assert_eq!(r.get("publisher").and_then(|p| p.as_str()), Some("sequential ×4"));
    let refused = loadgen(&[
        "product-approved",
        "--conns",
        "1",
        "--events",
        "1",
        "--publishers",
        "2",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--publisher sequential"));
}

#[test]
fn a_reconnect_storm_recovers_every_missed_event_once() {
    let out_json = scratch("reconnect.json");
    let out = loadgen(&[
        "reconnect-storm",
        "--conns",
        "300",
        "--events",
        "40",
        "--rate",
        "max",
        "--json",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out_json);
    assert_eq!(num(&v, "published"), 40);
    assert_eq!(num(&v, "deliveries"), 300 * 40);
    assert_eq!((num(&v, "lost"), num(&v, "duplicates")), (0, 0));
    assert_eq!((num(&v, "offset_gaps"), num(&v, "offset_duplicates")), (0, 0));
    let r = &v["reconnect"];
    assert_eq!(num(r, "reconnected"), 300);
    assert_eq!(
        num(r, "recovered_events"),
        300 * 40,
        "every event came from recovery"
    );
    assert_eq!(num(&r["caught_up_us"], "samples"), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reconnect → caught up"), "{stdout}");
}

#[test]
fn with_compression_every_event_arrives_compressed_and_intact() {
    let run = |name: &str, extra: &[&str]| {
        let path = scratch(name);
        let mut args = vec![
            "product-approved",
            "--conns",
            "40",
            "--events",
            "30",
            "--rate",
            "max",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--json", path.to_str().unwrap()]);
        let out = loadgen(&args);
        assert!(out.status.success(), "{}", show(&out));
        (json(&path), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (p, _) = run("plain.json", &[]);
    let (d, stdout) = run("deflated.json", &["--compression"]);
    for r in [&p, &d] {
        assert_eq!(num(r, "deliveries"), 40 * 30, "{r}");
        assert_eq!(num(r, "lost"), 0, "{r}");
        assert_eq!(num(r, "duplicates"), 0, "{r}");
    }
    let share = |r: &OwnedValue| r.get("compressed_share").and_then(|v| v.as_f64()).unwrap();
    let wire = |r: &OwnedValue| r.get("wire_bytes_per_delivery").and_then(|v| v.as_f64()).unwrap();
    assert_eq!(share(&p), 0.0, "{p}");
    // The `connected` event is small and goes plain; every event is compressed.
    assert!(share(&d) >= 30.0 / 31.0 - 1e-9, "{d}");
    assert!(
        wire(&d) < wire(&p) * 0.9,
        "plain {} vs compressed {}",
        wire(&p),
        wire(&d)
    );
    assert!(stdout.contains("permessage-deflate offered"), "{stdout}");
}

/// crash-restart's figures from its JSON report.
fn crash_run(name: &str, extra: &[&str]) -> OwnedValue {
    let out_json = scratch(name);
    let mut args = vec![
        "crash-restart",
        "--conns",
        "200",
        "--events",
        "20",
        "--rate",
        "50",
        "--down-ms",
        "300",
        "--backoff-max-ms",
        "1000",
        "--json",
        out_json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = loadgen(&args);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out_json);
    assert_eq!(num(&v, "published"), 20);
    assert_eq!(num(&v, "connected"), 200);
    let r = &v["resilience"];
    assert_eq!(num(r, "reconnects"), 200, "every client came back once");
    assert_eq!(
        num(&r["drops"], "connection closed without a close frame"),
        200,
        "a SIGKILL sends no close frame"
    );
    let c = &v["crash"];
    assert_eq!(num(c, "lost_after_restart"), 0);
    assert_eq!(num(&v, "lost"), 0);
    let back = c
        .get("all_back_ms")
        .and_then(|x| x.as_f64())
        .expect("every client back");
    // Down 300 ms, then at most one longest backoff (1 s) plus the handshake.
    assert!(back < 300.0 + 2.0 * 1000.0 + 1000.0, "all back after {back} ms");
    let h = &v["health"];
    assert!(num(h, "probes") > 10, "{h}");
    assert_eq!(num(h, "failures"), 0, "/health answered from the restart on");
    v
}

#[test]
fn after_a_kill_9_every_client_comes_back_and_learns_the_epoch_changed() {
    let v = crash_run("crash-memory.json", &[]);
    let r = &v["resilience"];
    // Three topics per user connection (type:user, all, user:loadgen).
    assert_eq!(num(&r["not_recovered"], "epoch changed"), 3 * 200, "{r}");
    assert_eq!(num(r, "recovered_events"), 0);
}

#[test]
fn after_a_kill_9_a_redis_broker_recovers_every_event() {
    let dir = scratch("redis-crash");
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server not found: install Debian's redis-server (.ci/run does)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let broker = format!("--server-arg=--broker=redis://127.0.0.1:{port}");
    let v = crash_run("crash-redis.json", &[&broker]);
    let _ = redis.kill();
    let _ = redis.wait();
    let r = &v["resilience"];
    assert_eq!(r["not_recovered"].as_object().map(|o| o.len()), Some(0), "{r}");
    assert_eq!(
        num(&v["crash"], "lost_at_crash"),
        0,
        "Redis kept what the dead node had"
    );
    assert_eq!((num(&v, "offset_gaps"), num(&v, "offset_duplicates")), (0, 0));
    assert_eq!(num(&v, "deliveries"), 200 * 20);
}

#[test]
fn a_drain_under_load_closes_everyone_with_1001_and_loses_no_acknowledged_event() {
    let out_json = scratch("drain.json");
    let out = loadgen(&[
        "product-approved",
        "--conns",
        "300",
        "--events",
        "5000",
        "--rate",
        "200",
        "--publisher",
        "sequential",
        "--sigterm-after-ms",
        "700",
        "--server-arg=--drain-timeout=3s",
        "--json",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out_json);
    let d = &v["drain"];
    assert_eq!(d.get_bool("clean_exit"), Some(true), "{d}");
    assert_eq!(num(d, "going_away"), 300, "every client got close 1001: {v}");
    assert_eq!(num(d, "lost_acknowledged"), 0);
    assert_eq!((num(&v, "lost"), num(&v, "duplicates")), (0, 0));
    assert_eq!(num(&v, "unexpected_closes"), 0, "{v}");
    // Publishing was under way at the SIGTERM and stopped at a refusal.
    let published = num(&v, "published");
    assert!(published > 0 && published < 5000, "published {published}");
    assert!(d.get_str("refused").is_some(), "{d}");
    let exit_ms = d.get("exit_ms").and_then(|x| x.as_f64()).expect("exited");
    assert!(exit_ms < 3000.0 + 2000.0, "exited {exit_ms} ms after the SIGTERM");
}

#[test]
fn slowloris_peers_are_cut_at_the_handshake_timeout_while_clients_get_everything() {
    let out_json = scratch("slowloris.json");
    let out = loadgen(&[
        "product-approved",
        "--conns",
        "100",
        "--events",
        "40",
        "--rate",
        "10",
        "--slowloris",
        "200",
        "--slowloris-every-ms",
        "200",
        "--server-arg=--handshake-timeout=1s",
        "--json",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out_json);
    assert_eq!((num(&v, "lost"), num(&v, "deliveries")), (0, 100 * 40));
    let s = &v["slowloris"];
    let cuts = s["cuts"].as_object().expect("cuts");
    assert_eq!(cuts.len(), 1, "every cut is a 408: {s}");
    assert!(
        num(&s["cuts"], "408") >= 200,
        "each slow peer was cut at least once: {s}"
    );
    assert_eq!(num(s, "connect_failures"), 0);
    let after = &s["cut_after_us"];
    let (p50, max) = (
        after.get("p50").and_then(|x| x.as_f64()).unwrap(),
        after.get("max").and_then(|x| x.as_f64()).unwrap(),
    );
    // Cut at the 1 s timeout: not before, and not much after.
    assert!(
        after.get("min").and_then(|x| x.as_f64()).unwrap() >= 900_000.0,
        "{s}"
    );
    assert!(p50 < 1_500_000.0 && max < 3_000_000.0, "{s}");
    let oldest = s.get("oldest_open_ms").and_then(|x| x.as_f64()).unwrap();
    assert!(
        oldest < 3000.0,
        "a slow peer was still open after {oldest} ms: {s}"
    );
}
