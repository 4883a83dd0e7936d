//! The soak: the proxy (its own process) under steady load at about 80 % of its measured
//! capacity with a realistic mix (GET, ranged GET, PUT, multipart upload, LIST), beside many
//! idle keep-alive client connections. It samples the proxy's RSS and open file descriptors,
//! the backend connections and the latency percentiles at intervals, and fails if RSS grows
//! more than 5 % over the second half (beyond what the backend connections opened meanwhile
//! hold), if a request fails (the cluster is healthy), or if the
//! file descriptors do not return to their baseline once the clients leave.
//!
//! The default run is the short one CI runs (60 s, 1,000 idle connections);
//! `bash bench/soak.sh` runs the long one (10 minutes, 10,000 idle connections) and writes
//! its samples and a plot. Knobs: `SOAK_SECONDS`, `SOAK_IDLE`, `SOAK_OUT` (a directory for
//! `soak.json` and `soak.svg`).

mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::status_kib;
use s3_mock::{ClusterConfig, MockCluster, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OBJECTS: usize = 32;
const OBJECT_BYTES: usize = 64 * 1024;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc fd").count()
}

/// One operation of the mix, by a ticket in 0..100.
async fn operate(s3: &aws_sdk_s3::Client, ticket: u64, sequence: u64) -> Result<(), String> {
    let object = format!("objects/{:03}", sequence % OBJECTS as u64);
    let failed = |what: &str, error: &dyn std::fmt::Debug| format!("{what}: {error:?}");
    match ticket {
        0..50 => {
            let body = s3
                .get_object()
                .bucket("soak")
                .key(&object)
                .send()
                .await
                .map_err(|e| failed("GET", &e))?;
            let bytes = body
                .body
                .collect()
                .await
                .map_err(|e| failed("GET body", &e))?
                .into_bytes();
            (bytes.len() == OBJECT_BYTES)
                .then_some(())
                .ok_or_else(|| format!("GET got {} bytes", bytes.len()))
        }
        50..65 => {
            let body = s3
                .get_object()
                .bucket("soak")
                .key(&object)
                .range("bytes=0-1023")
                .send()
                .await
                .map_err(|e| failed("ranged GET", &e))?;
            let bytes = body
                .body
                .collect()
                .await
                .map_err(|e| failed("ranged body", &e))?
                .into_bytes();
            (bytes.len() == 1024)
                .then_some(())
                .ok_or_else(|| format!("ranged GET got {} bytes", bytes.len()))
        }
        65..85 => s3
            .put_object()
            .bucket("soak")
            .key(format!("written/{sequence}"))
            .body(ByteStream::from(vec![(sequence % 251) as u8; 16 * 1024]))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("PUT", &e)),
        85..90 => {
            let key = format!("multipart/{sequence}");
            let created = s3
                .create_multipart_upload()
                .bucket("soak")
                .key(&key)
                .send()
                .await
                .map_err(|e| failed("create multipart", &e))?;
            let upload = created.upload_id().unwrap_or_default().to_owned();
            let mut parts = Vec::new();
            for number in 1..=2 {
                let part = s3
                    .upload_part()
                    .bucket("soak")
                    .key(&key)
                    .upload_id(&upload)
                    .part_number(number)
                    .body(ByteStream::from(vec![number as u8; 8 * 1024]))
                    .send()
                    .await
                    .map_err(|e| failed("upload part", &e))?;
                parts.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(number)
                        .e_tag(part.e_tag().unwrap_or_default())
                        .build(),
                );
            }
            s3.complete_multipart_upload()
                .bucket("soak")
                .key(&key)
                .upload_id(&upload)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed("complete multipart", &e))
        }
        _ => s3
            .list_objects_v2()
            .bucket("soak")
            .prefix("objects/")
            .max_keys(20)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("LIST", &e)),
    }
}

/// A sample of one interval.
#[derive(Clone, Debug, serde::Serialize)]
struct Sample {
    at_s: u64,
    rss_kib: u64,
    fds: usize,
    backend_connections: u64,
    operations: usize,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1].as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// RSS (MiB) and file descriptors over time, as SVG.
fn plot(samples: &[Sample]) -> String {
    let (width, height, margin) = (720.0, 300.0, 50.0);
    let last = samples.last().map_or(1, |sample| sample.at_s.max(1)) as f64;
    let line = |values: Vec<f64>, color: &str| {
        let top = values.iter().copied().fold(1.0, f64::max) * 1.1;
        let points: Vec<String> = samples
            .iter()
            .zip(&values)
            .map(|(sample, value)| {
                let x = margin + (width - 2.0 * margin) * sample.at_s as f64 / last;
                let y = height - margin - (height - 2.0 * margin) * value / top;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        (
            format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            ),
            top,
        )
    };
    let (rss, rss_top) = line(
        samples.iter().map(|sample| sample.rss_kib as f64 / 1024.0).collect(),
        "#1f77b4",
    );
    let (fds, fds_top) = line(samples.iter().map(|sample| sample.fds as f64).collect(), "#d62728");
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">\n");
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{margin}\" y=\"20\" font-family=\"sans-serif\" font-size=\"13\">soak: proxy RSS (blue, top {rss_top:.0} MiB) and open fds (red, top {fds_top:.0}) over {last:.0} s</text>"
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{margin}\" y1=\"{y}\" x2=\"{x}\" y2=\"{y}\" stroke=\"black\"/>",
        y = height - margin,
        x = width - margin
    );
    let _ = writeln!(svg, "{rss}\n{fds}\n</svg>");
    svg
}

fn backend_connections(nodes: &[NodeHandle]) -> u64 {
    nodes.iter().map(|node| node.stats().connections_open).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_beside_idle_connections_leaks_nothing() {
    let seconds = knob("SOAK_SECONDS", 60);
    let idle_count = knob("SOAK_IDLE", 1000) as usize;
    let interval = Duration::from_secs((seconds / 6).clamp(1, 10));
    let cluster = ClusterConfig {
        nodes: 3,
        credentials: Some((common::BACKEND_KEY.into(), common::BACKEND_SECRET.into())),
        min_part_size: 0,
        ..ClusterConfig::default()
    };
    let nodes = MockCluster::start_tcp(&cluster, common::local(), 0)
        .await
        .expect("cluster");
    // Idle connections are held for the whole run (the idle deadline is the point of another
    // test); idle backend connections close after 2 s, so file descriptors can return to
    // their baseline.
    let proxy = common::proxy_process(
        &nodes,
        &format!(
            "max_connections = {}\nmax_connections_per_client = 0",
            idle_count + 4096
        ),
        "[timeouts]\nclient_idle = \"1h\"\nclient_header = \"1h\"\n",
        "[pools.connections]\nidle_timeout = \"2s\"\n",
        "soak",
    )
    .await;
    let (pid, endpoint) = (proxy.pid, proxy.endpoint);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline_fds = open_fds(pid);

    let s3 = common::client(endpoint, "caller", "caller-secret");
    s3.create_bucket().bucket("soak").send().await.expect("create");
    for index in 0..OBJECTS {
        s3.put_object()
            .bucket("soak")
            .key(format!("objects/{index:03}"))
            .body(ByteStream::from(vec![(index % 251) as u8; OBJECT_BYTES]))
            .send()
            .await
            .expect("preload");
    }

    // Capacity: 16 closed-loop workers for 5 s.
    let done = Arc::new(AtomicU64::new(0));
    let stop = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut workers = Vec::new();
    for worker in 0..16u64 {
        let (s3, done) = (s3.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut sequence = worker * 1_000_000;
            while tokio::time::Instant::now() < stop {
                sequence += 1;
                operate(&s3, sequence * 37 % 100, sequence).await.expect("capacity run");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let capacity = done.load(Ordering::Relaxed) as f64 / 5.0;
    let rate = (capacity * 0.8).max(1.0);

    // The idle keep-alive clients: each sends one request and then nothing.
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await.expect("idle connect");
        stream
            .write_all(b"HEAD /soak/objects/000 HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .expect("idle request");
        let mut head = [0u8; 512];
        let read = stream.read(&mut head).await.expect("idle answer");
        assert!(
            head[..read].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&head[..read])
        );
        idle.push(stream);
    }

    // Steady load, open loop, sampled every interval.
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sample = started + interval;
    let mut samples = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while tokio::time::Instant::now() < end {
        ticks.tick().await;
        sequence += 1;
        let (client, timed, failed) = (s3.clone(), latencies.clone(), failures.clone());
        tasks.spawn(async move {
            let begun = tokio::time::Instant::now();
            match operate(&client, sequence * 37 % 100, sequence).await {
                Ok(()) => timed.lock().expect("not poisoned").push(begun.elapsed()),
                Err(error) => failed.lock().expect("not poisoned").push(error),
            }
        });
        while tasks.try_join_next().is_some() {}
        if tokio::time::Instant::now() >= next_sample {
            next_sample += interval;
            let mut period = std::mem::take(&mut *latencies.lock().expect("not poisoned"));
            period.sort_unstable();
            samples.push(Sample {
                at_s: started.elapsed().as_secs(),
                rss_kib: status_kib(pid, "VmRSS:"),
                fds: open_fds(pid),
                backend_connections: backend_connections(&nodes),
                operations: period.len(),
                p50_ms: percentile(&period, 0.5),
                p99_ms: percentile(&period, 0.99),
            });
        }
    }
    while tasks.join_next().await.is_some() {}

    // The clients leave: every descriptor the proxy opened for them must close again.
    drop(idle);
    drop(s3);
    let mut fds_after = open_fds(pid);
    for _ in 0..100 {
        if fds_after <= baseline_fds {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds(pid);
    }
    let peak_kib = status_kib(pid, "VmHWM:");
    proxy.stop().await;

    let mut table = format!(
        "soak: {seconds} s at {rate:.0} ops/s (80 % of a measured {capacity:.0}), {idle_count} idle connections; \
         fds {baseline_fds} before, {fds_after} after; peak RSS {peak_kib} KiB\n  t(s)  RSS KiB   fds  backend conns   ops  p50 ms  p99 ms\n"
    );
    for sample in &samples {
        let _ = writeln!(
            table,
            "  {:>4} {:>8} {:>5} {:>14} {:>5} {:>7.2} {:>7.2}",
            sample.at_s,
            sample.rss_kib,
            sample.fds,
            sample.backend_connections,
            sample.operations,
            sample.p50_ms,
            sample.p99_ms
        );
    }
    eprintln!("{table}");
    if let Ok(out) = std::env::var("SOAK_OUT") {
        let out = std::path::Path::new(&out);
        std::fs::create_dir_all(out).expect("SOAK_OUT");
        std::fs::write(
            out.join("soak.json"),
            serde_json::to_string_pretty(&samples).expect("json"),
        )
        .expect("write");
        std::fs::write(out.join("soak.svg"), plot(&samples)).expect("write");
        std::fs::write(out.join("soak.txt"), &table).expect("write");
    }

    let failures = failures.lock().expect("not poisoned");
    assert!(
        failures.is_empty(),
        "{} request(s) failed, e.g. {}",
        failures.len(),
        failures[0]
    );
    assert!(samples.len() >= 4, "too few samples: {table}");
    // A leak grows with the requests served; the memory of backend connections open at the
    // instant of a sample is not one (each holds its read and write buffers, which grow to
    // the 64-KiB bodies: about 256 KiB), and their number follows the load of that instant
    // (a slower second opens more). So the second half may grow 5 %, plus 256 KiB for each
    // backend connection more than at its start.
    let half = &samples[samples.len() / 2..];
    let (start, end) = (&half[0], &half[half.len() - 1]);
    let (first, last) = (start.rss_kib as f64, end.rss_kib as f64);
    let opened = end.backend_connections.saturating_sub(start.backend_connections) as f64;
    assert!(
        last <= first * 1.05 + opened * 256.0,
        "RSS grew {:.1} % over the second half, with {opened} more backend connections:\n{table}",
        (last / first - 1.0) * 100.0
    );
    assert!(
        fds_after <= baseline_fds,
        "file descriptors did not return to their baseline ({baseline_fds}): {fds_after}\n{table}"
    );
}
