//! `/dashboard` in a real browser (headless Chromium): the page the binary serves shows each
//! backend of a proxy under load with its figures, updating from `/admin/backends`.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

/// The rows of the rendered page: each `<tr data-backend=ADDRESS>` with its cells' text by
/// `data-field`, and its state.
fn rows(dom: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, String)> {
    dom.split("<tr data-backend=\"")
        .skip(1)
        .map(|row| {
            let address = row.split('"').next().unwrap_or_default().to_owned();
            let row = row.split("</tr>").next().unwrap_or_default();
            let fields = row
                .split("data-field=\"")
                .skip(1)
                .filter_map(|cell| {
                    let (name, rest) = cell.split_once('"')?;
                    let text = rest.split_once('>')?.1.split("</td>").next()?;
                    // The share cell holds its bar first.
                    let text = text.rsplit('>').next().unwrap_or(text);
                    Some((name.to_owned(), text.trim().to_owned()))
                })
                .collect();
            let state = row
                .split("class=\"state ")
                .nth(1)
                .and_then(|cell| cell.split_once('>'))
                .and_then(|(_, rest)| rest.split("</td>").next())
                .unwrap_or_default()
                .to_owned();
            (address, fields, state)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_backend_live_in_a_real_browser() {
    // Proves the live view: Chromium loads /dashboard from the admin listener while clients
    // load the proxy, runs its script (four seconds of its polling), and the page shows the
    // three nodes with their share, fair share, in-flight, latency and request counts, the
    // pool's imbalance, and a drained node as draining with no fair share.
    let Some(chromium) = common::installed("chromium", "STOREFRONT_CHROMIUM") else {
        return;
    };
    let harness = common::harness(3, "[balance]\nalgorithm = \"round-robin\"\n").await;
    let admin = common::admin(&harness).await;
    let s3 = harness.client();
    s3.create_bucket().bucket("live").send().await.expect("create");
    s3.put_object()
        .bucket("live")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    let (_, backends) = common::admin_call(admin, "GET", "/admin/backends").await;
    let backends: serde_json::Value = serde_json::from_str(&backends).expect("JSON");
    let drained = backends[2]["address"].as_str().expect("an address").to_owned();
    let drained_id = backends[2]["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        common::admin_call(admin, "POST", &format!("/admin/backends/{drained_id}/drain"))
            .await
            .0,
        200
    );
    let load = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            let _ = s3.head_object().bucket("live").key("k").send().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("http://{admin}/dashboard"))
        .output()
        .await
        .expect("chromium runs");
    load.abort();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = rows(&dom);
    assert_eq!(rows.len(), 3, "three backends on the page:\n{dom}");
    for node in &harness.nodes {
        let address = node.address().expect("bound").to_string();
        let (_, fields, state) = rows
            .iter()
            .find(|(row, _, _)| *row == address)
            .unwrap_or_else(|| panic!("no row for {address}:\n{dom}"));
        let number = |field: &str| -> f64 {
            fields
                .get(field)
                .map(|text| text.trim_end_matches(" %"))
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("{address}: no number for {field} in {fields:?}"))
        };
        assert!(number("latency") >= 0.0 && number("in_flight") >= 0.0 && number("requests") >= 0.0);
        if address == drained {
            assert_eq!(state, "draining", "{fields:?}");
            assert_eq!(number("fair"), 0.0, "a drained node is owed nothing");
        } else {
            assert_eq!(state, "up", "{fields:?}");
            assert_eq!(number("fair"), 50.0, "two available nodes of equal weight");
            assert!(number("share") > 0.0, "{address} serves the load: {fields:?}");
            assert!(number("requests") >= 10.0, "{address}: {fields:?}");
        }
    }
    assert!(dom.contains("data-pool=\"dc1\">imbalance "), "{dom}");
    assert!(dom.contains("3 backends"), "the status line after an update:\n{dom}");
}
