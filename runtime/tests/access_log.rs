//! The access log: one JSON line per request with what an operator looks for, keys only where
//! allowed, and a writer that falls behind costs dropped lines, never a waiting request.

mod common;

use std::time::Duration;

use aws_sdk_s3::operation::RequestId as _;
use aws_sdk_s3::primitives::ByteStream;

/// The lines of the log at `path` once there are at least `count` (within 10 s).
async fn lines(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
            .collect();
        if lines.len() >= count || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("storefront-access-{name}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
async fn every_request_leaves_one_line_with_its_figures() {
    // Proves the access log's content: a line per request (the refused one included) whose
    // request id is the one the client got, with operation, bucket, key, status, bytes, the
    // backend that served it, the identity and the decision, times in milliseconds.
    let path = log_path("lines");
    let harness = common::harness(2, &format!("[telemetry]\naccess_log = \"{}\"\n", path.display())).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("logged").send().await.expect("create");
    let put = s3
        .put_object()
        .bucket("logged")
        .key("dir/a.txt")
        .body(ByteStream::from_static(b"twelve bytes"))
        .send()
        .await
        .expect("put");
    // Read as a browser would, to see the headers: the proxy's id beside the backend's.
    let (_, answer) = common::send_raw(
        harness.endpoint,
        b"GET /logged/dir/a.txt HTTP/1.1\r\nhost: proxy\r\n\r\n",
    )
    .await;
    let header = |name: &str| {
        answer.lines().find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let got_id = header("x-storefront-request-id");
    assert!(got_id.is_some(), "{answer}");
    assert!(
        header("x-amz-request-id").is_some_and(|backend| backend.starts_with("mock-")),
        "the backend's own id passes through: {answer}"
    );
    let _ = s3.get_object().bucket("logged").key("absent").send().await;
    let lines = lines(&path, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let put_line = &lines[1];
    assert_eq!(put_line["operation"], "PutObject");
    assert_eq!(put_line["bucket"], "logged");
    assert_eq!(put_line["key"], "dir/a.txt");
    assert_eq!(put_line["status"], 200);
    assert_eq!(put_line["bytes_in"], 12);
    assert_eq!(put_line["identity_source"], "trusted");
    assert_eq!(put_line["decision"], "allow");
    assert_eq!(put_line["outcome"], "completed");
    assert_eq!(put_line["attempts"], 1);
    assert!(put.request_id().is_some_and(|backend| backend.starts_with("mock-")));
    assert!(
        put_line["request_id"].as_str().is_some_and(|id| id.len() == 16),
        "{put_line}"
    );
    let backend = put_line["backends"][0].as_str().expect("a backend");
    assert!(
        harness
            .nodes
            .iter()
            .any(|node| node.address().expect("bound").to_string() == backend),
        "{backend} is one of the nodes"
    );
    let get_line = &lines[2];
    assert_eq!(
        get_line["request_id"].as_str().map(str::to_owned),
        got_id,
        "the id the client saw"
    );
    assert_eq!(get_line["bytes_out"], 12);
    assert!(get_line["ttfb_ms"].as_f64().is_some_and(|ttfb| ttfb >= 0.0));
    assert!(get_line["duration_ms"].as_f64() >= get_line["ttfb_ms"].as_f64());
    assert!(
        get_line["time"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z') && time.contains('T'))
    );
    let missing = &lines[3];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["key"], "absent");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn keys_stay_out_where_configured() {
    let path = log_path("nokeys");
    let harness = common::harness(
        1,
        &format!(
            "[telemetry]\naccess_log = \"{}\"\naccess_log_keys = false\n",
            path.display()
        ),
    )
    .await;
    let s3 = harness.client();
    s3.create_bucket().bucket("private").send().await.expect("create");
    s3.put_object()
        .bucket("private")
        .key("secret/name.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|line| line.get("key").is_none()), "{lines:#?}");
    let text = std::fs::read_to_string(&path).expect("log");
    assert!(!text.contains("secret/name.txt"), "{text}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_writer_that_cannot_keep_up_costs_lines_not_requests() {
    // Proves the log never holds up a request: its sink is a pipe nobody reads (its 64 KiB
    // buffer fills and the writer blocks), yet every request is answered at once, and the lines
    // that found the queue full are dropped and counted in storefront_access_log_dropped.
    let path = log_path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Hold the pipe open for reading (without ever reading) so the log's open does not wait.
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK
            .open(&path)
            .expect("the reading end")
    };
    let harness = common::harness(
        1,
        &format!(
            "[telemetry]\naccess_log = \"{}\"\naccess_log_queue = 4\n",
            path.display()
        ),
    )
    .await;
    let admin = common::admin(&harness).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("flood").send().await.expect("create");
    let started = tokio::time::Instant::now();
    for _ in 0..600 {
        tokio::time::timeout(Duration::from_secs(5), s3.head_bucket().bucket("flood").send())
            .await
            .expect("answered while the log is stuck")
            .expect("served");
    }
    let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
    let dropped: f64 = metrics
        .lines()
        .find(|line| line.starts_with("storefront_access_log_dropped_total"))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "600 lines into a full 64 KiB pipe must drop some:\n{metrics}"
    );
    eprintln!(
        "600 requests in {:?} with the log stuck; {dropped} lines dropped",
        started.elapsed()
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn with_traces_on_a_line_names_its_trace() {
    // Proves the access log and the traces agree: the line of a request sent under a caller's
    // trace carries that trace id, and a request without one gets the id of the trace the
    // proxy started (32 hex digits).
    let path = log_path("traced");
    let (collector, _received) = common::collector::start(common::collector::Answer::Success).await;
    let harness = common::harness(
        1,
        &format!(
            "[telemetry]\naccess_log = \"{}\"\n\n[telemetry.otlp]\nendpoint = \"http://{collector}\"\n\n[telemetry.traces]\nsample_ratio = 0.0\n",
            path.display()
        ),
    )
    .await;
    let (_, answer) = common::send_raw(
        harness.endpoint,
        b"GET / HTTP/1.1\r\nhost: proxy\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = common::send_raw(harness.endpoint, b"GET / HTTP/1.1\r\nhost: proxy\r\n\r\n").await;
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    let started = lines[1]["trace_id"].as_str().expect("a trace id");
    assert!(
        started.len() == 32 && started != "0af7651916cd43dd8448eb211c80319c",
        "{started}"
    );
    let _ = std::fs::remove_file(&path);
}
