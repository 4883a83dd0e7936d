//! The node capacity model: load becomes latency the way it does on a real storage node.
//!
//! A node has `slots` concurrent service slots. Each request holds a slot for its service
//! time, `base + bytes ÷ bandwidth` (times the node's slow factor). Requests beyond the slots
//! wait in a FIFO queue (tokio's semaphore is fair); past `queue_max` waiting requests the node
//! answers `503 SlowDown` at once, as an overloaded S3 node does. With arrival rate λ and
//! service time S per slot, a node saturates at λ = slots ÷ S; beyond that the queue (and so
//! the latency) grows until the bound turns load away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Capacity parameters of one node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityConfig {
    /// Concurrent service slots. Default 16.
    pub slots: usize,
    /// Requests that may wait for a slot before the node sheds load. Default 128.
    pub queue_max: usize,
    /// Service time of an empty request. Default 2 ms.
    pub base: Duration,
    /// Bytes per second one slot moves (request plus response body). Default 500 MiB/s.
    pub bandwidth_bytes_per_second: u64,
    /// Keep the slot until the response body has been sent (or abandoned), as a storage
    /// node's request thread serves the whole response: a client that stops reading then
    /// ties up a slot. Default false (the slot is free once the service time has passed).
    pub hold_while_sending: bool,
    /// Close a keep-alive connection that has been idle this long between requests, as S3
    /// servers do (after tens of seconds). Default none (idle connections stay open).
    pub idle_timeout: Option<Duration>,
}

impl Default for CapacityConfig {
    /// Defaults that make a hotspot visible at modest load: 16 slots of 2 ms serve 8000 small
    /// requests a second; a node pinned by several heavy clients queues within seconds.
    fn default() -> Self {
        CapacityConfig {
            slots: 16,
            queue_max: 128,
            base: Duration::from_millis(2),
            bandwidth_bytes_per_second: 500 * 1024 * 1024,
            hold_while_sending: false,
            idle_timeout: None,
        }
    }
}

impl CapacityConfig {
    /// The modelled service time of a request moving `bytes` body bytes.
    pub fn service_time(&self, bytes: u64, slow_factor: f64) -> Duration {
        let transfer = if self.bandwidth_bytes_per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(bytes as f64 / self.bandwidth_bytes_per_second as f64)
        };
        (self.base + transfer).mul_f64(slow_factor.max(0.0))
    }
}

/// The queue bound was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A node's slots and queue.
#[derive(Debug)]
pub struct Capacity {
    config: CapacityConfig,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Decrements the waiting count however the wait ends (slot granted or caller gone).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Capacity {
    /// A node with these parameters.
    pub fn new(config: CapacityConfig) -> Self {
        Capacity {
            config,
            slots: Arc::new(Semaphore::new(config.slots.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &CapacityConfig {
        &self.config
    }

    /// Requests waiting for a slot now.
    pub fn queue_len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Wait for a slot in FIFO order, or refuse at once when `queue_max` requests already wait.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, QueueFull> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.config.queue_max {
            return Err(QueueFull);
        }
        self.slots.clone().acquire_owned().await.map_err(|_closed| QueueFull)
    }
}
