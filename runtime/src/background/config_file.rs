//! The configuration file, watched: when its content changes (an operator's edit, or a
//! Kubernetes ConfigMap update landing in its mounted directory, which swaps a symlink), the
//! proxy reloads it as SIGHUP would. A file that does not validate is refused, logged and
//! counted once per content, and the running configuration stays.
//!
//! The file is polled, not watched with inotify: a ConfigMap update replaces the directory's
//! `..data` symlink, which inotify on the file's path does not report, while a read every
//! `admin.watch_interval` sees the new content whatever replaced it. The content is compared,
//! not the modification time, so a touch reloads nothing and an edit within one second is
//! still seen.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Weak;

use tokio::sync::watch;

use crate::app::App;
use crate::transport::Connect;

/// A digest of the file's content; none while it cannot be read (mid-replacement, removed).
async fn digest(path: &Path) -> Option<u64> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || digest_now(&path)).await.ok()?
}

/// [`digest`], read at once (a small file, at start-up).
pub fn digest_now(path: &Path) -> Option<u64> {
    let content = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut hasher);
    Some(hasher.finish())
}

/// Reload `app` from `path` whenever the file's content changes from `loaded` (the digest of
/// the content the running configuration came from, taken when it was loaded: a digest taken
/// when this task first runs would miss a change made before, on a busy machine), until `stop`
/// fires or the app is gone. The interval and the switch are read from the configuration in
/// force at each poll: a reload can change the interval or end the watch (a proxy started
/// without it does not start one on reload).
pub async fn watch_config_file<C: Connect>(
    app: Weak<App<C>>,
    path: PathBuf,
    loaded: Option<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = loaded;
    loop {
        let interval = match app.upgrade() {
            Some(app) => {
                let admin = &app.proxy.current().config.admin;
                if !admin.watch_config {
                    tracing::info!(file = %path.display(), "configuration file no longer watched (admin.watch_config = false)");
                    return;
                }
                admin.watch_interval.get()
            }
            None => return,
        };
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = digest(&path).await;
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        let Some(app) = app.upgrade() else {
            return;
        };
        match app.reload() {
            Ok(()) => tracing::info!(file = %path.display(), "configuration file changed: applied"),
            Err(error) => tracing::error!(
                file = %path.display(),
                "configuration file changed but was refused; the running configuration stays: {error}"
            ),
        }
    }
}
