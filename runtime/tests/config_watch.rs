//! The configuration file, watched: a changed file is applied by itself (as a ConfigMap update
//! lands in its mounted directory, by a symlink swap), a bad one refused once, logged and
//! counted, and the running configuration stays.

mod common;

use std::time::Duration;

use common::{admin_call, harness};
use storefront::App;
use storefront::transport::TcpConnector;

/// The number of backends `/admin/backends` lists.
async fn backends(admin: std::net::SocketAddr) -> usize {
    let (_, body) = admin_call(admin, "GET", "/admin/backends").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .expect("JSON")
        .as_array()
        .map_or(0, Vec::len)
}

/// `storefront_config_reloads_total` for `result`.
fn reloads(app: &App<TcpConnector>, result: &str) -> u64 {
    app.metrics
        .render()
        .lines()
        .find(|line| {
            line.starts_with("storefront_config_reloads_total{")
                && line.contains(&format!("storefront_reload_result=\"{result}\""))
        })
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// A proxy serving `harness`'s nodes from the file at `path` (so that it reloads from it),
/// and its admin listener.
async fn serve_file(harness: &common::Harness, path: &std::path::Path) -> (common::Harness, std::net::SocketAddr) {
    let (config, credentials) = storefront::settings::load(path).expect("valid file");
    let (app, endpoint) = common::serve(config, credentials, Some(path.to_owned())).await;
    let watched = common::Harness {
        nodes: harness.nodes.clone(),
        app,
        endpoint,
    };
    let admin = common::admin(&watched).await;
    (watched, admin)
}

/// Wait up to 10 s for `done`.
async fn eventually(mut done: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_file_is_applied_by_itself_and_a_bad_one_refused_once() {
    // Proves the file watch, with the file replaced the way a ConfigMap volume replaces it (a
    // new directory, then the `..data` symlink swapped): the new content is applied with no
    // signal or admin call; a file with a typo is refused, counted once however many polls see
    // it, and the running configuration stays; fixing it applies again.
    let harness = harness(2, "").await;
    let root = std::env::temp_dir().join(format!("storefront-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let extra = "[health.active]\nenabled = false\n[admin]\nwatch_interval = \"100ms\"\n";
    // `root/..data -> root/v1`, `root/storefront.toml -> ..data/storefront.toml`.
    let publish = |version: &str, text: &str| {
        let directory = root.join(version);
        std::fs::create_dir_all(&directory).expect("version dir");
        std::fs::write(directory.join("storefront.toml"), text).expect("write");
        let staged = root.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(version, &staged).expect("symlink");
        std::fs::rename(&staged, root.join("..data")).expect("swap");
    };
    publish("v1", &common::config_text(&harness.nodes, extra));
    let path = root.join("storefront.toml");
    std::os::unix::fs::symlink("..data/storefront.toml", &path).expect("link");
    let (watched, admin) = serve_file(&harness, &path).await;
    let app = watched.app.clone();
    assert_eq!(backends(admin).await, 2);

    // One backend only: applied by itself.
    publish("v2", &common::config_text(&harness.nodes[..1], extra));
    eventually(async || backends(admin).await == 1, "the new file applied").await;
    assert_eq!(reloads(&app, "applied"), 2, "the start and the change");

    // A typo: refused once, the running configuration stays.
    publish("v3", &format!("{extra}[balance]\nalgoritm = \"random\"\n"));
    eventually(async || reloads(&app, "refused") == 1, "the bad file refused").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reloads(&app, "refused"), 1, "one refusal per content, not per poll");
    assert_eq!(backends(admin).await, 1, "the running configuration stays");
    let s3 = watched.client();
    s3.list_buckets().send().await.expect("still serving");

    // Fixed: applied again, with both backends.
    publish("v4", &common::config_text(&harness.nodes, extra));
    eventually(async || backends(admin).await == 2, "the fixed file applied").await;
    assert_eq!(reloads(&app, "applied"), 3);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn with_the_watch_off_a_changed_file_waits_for_a_reload() {
    // Proves `admin.watch_config = false`: a changed file changes nothing until reloaded.
    let harness = harness(2, "").await;
    let root = std::env::temp_dir().join(format!("storefront-nowatch-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    let extra = "[health.active]\nenabled = false\n[admin]\nwatch_config = false\nwatch_interval = \"100ms\"\n";
    let path = root.join("storefront.toml");
    std::fs::write(&path, common::config_text(&harness.nodes, extra)).expect("write");
    let (watched, admin) = serve_file(&harness, &path).await;
    let app = watched.app.clone();
    std::fs::write(&path, common::config_text(&harness.nodes[..1], extra)).expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(backends(admin).await, 2, "not applied by itself");
    app.reload().expect("reload");
    assert_eq!(backends(admin).await, 1);
    let _ = std::fs::remove_dir_all(&root);
}
