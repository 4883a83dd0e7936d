//! The capacity model under tokio's paused time: load turns into queueing latency, and past
//! the queue bound into 503 SlowDown, as the FIFO-slots model predicts.

use std::sync::Arc;
use std::time::Duration;

use s3_mock::{CapacityConfig, ClusterConfig, MockCluster, NodeService};
use tokio::time::Instant;

const SERVICE: Duration = Duration::from_millis(20);
const SLOTS: usize = 2;
const QUEUE_MAX: usize = 4;
/// One arrival every 5 ms against a capacity of one request per 10 ms (2 slots × 20 ms): twice
/// what the node can serve.
const INTERARRIVAL: Duration = Duration::from_millis(5);
const REQUESTS: usize = 40;

fn request(method: &str, uri: &str) -> http::Request<s3s::Body> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .body(s3s::Body::empty())
        .expect("valid request")
}

async fn call(service: &NodeService, method: &str, uri: &str) -> u16 {
    service.call(request(method, uri)).await.status().as_u16()
}

#[derive(Clone, Copy, Debug)]
struct Outcome {
    arrival: Duration,
    done: Duration,
    status: u16,
}

#[tokio::test(start_paused = true)]
async fn twice_the_load_queues_then_sheds_as_predicted() {
    // Proves the model: FIFO service on `SLOTS` slots of `SERVICE` each, latency growing as the
    // queue fills, and SlowDown exactly when `QUEUE_MAX` requests already wait.
    let config = ClusterConfig {
        nodes: 1,
        capacity: CapacityConfig {
            slots: SLOTS,
            queue_max: QUEUE_MAX,
            base: SERVICE,
            bandwidth_bytes_per_second: 0,
            hold_while_sending: false,
            idle_timeout: None,
        },
        ..ClusterConfig::default()
    };
    let cluster = MockCluster::build(&config);
    let service = Arc::new(cluster.services[0].clone());
    assert_eq!(call(&service, "PUT", "/bucket").await, 200);

    let start = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..REQUESTS {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + INTERARRIVAL * index as u32).await;
            let arrival = start.elapsed();
            let status = call(&service, "HEAD", "/bucket").await;
            Outcome {
                arrival,
                done: start.elapsed(),
                status,
            }
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("request task"));
    }

    let served: Vec<Outcome> = outcomes.iter().copied().filter(|o| o.status == 200).collect();
    let shed: Vec<Outcome> = outcomes.iter().copied().filter(|o| o.status == 503).collect();
    assert_eq!(
        served.len() + shed.len(),
        REQUESTS,
        "every request is served or shed: {outcomes:?}"
    );

    // FIFO on SLOTS slots: each served request starts at its arrival or, if both slots are
    // busy, when the request SLOTS places ahead of it finishes; never earlier, never later.
    let starts: Vec<Duration> = served.iter().map(|o| o.done - SERVICE).collect();
    for (index, outcome) in served.iter().enumerate() {
        let slot_free = if index >= SLOTS {
            served[index - SLOTS].done
        } else {
            Duration::ZERO
        };
        assert_eq!(
            starts[index],
            outcome.arrival.max(slot_free),
            "request {index}: {outcome:?}"
        );
    }

    // Latency grows by (SERVICE / SLOTS - INTERARRIVAL) = 5 ms per request until the queue is
    // full, then holds at about SERVICE × (1 + QUEUE_MAX / SLOTS) = 60 ms.
    let latencies: Vec<Duration> = served.iter().map(|o| o.done - o.arrival).collect();
    assert_eq!(latencies[0], SERVICE);
    assert!(
        latencies.windows(2).take(6).all(|pair| pair[1] >= pair[0]),
        "{latencies:?}"
    );
    let saturated = SERVICE * (1 + (QUEUE_MAX / SLOTS) as u32);
    let worst = *latencies.iter().max().expect("some served");
    assert!(
        worst >= saturated - INTERARRIVAL && worst <= saturated + INTERARRIVAL,
        "worst {worst:?}, predicted {saturated:?}"
    );

    // Shedding happens, and only when the queue was full: at a shed request's arrival, at least
    // QUEUE_MAX - 1 served requests had arrived and not yet started (one may be starting at
    // that very millisecond, which paused time cannot order).
    assert!(!shed.is_empty(), "2x load past a bounded queue must shed");
    for outcome in &shed {
        let waiting = served
            .iter()
            .zip(&starts)
            .filter(|(other, start)| other.arrival < outcome.arrival && **start > outcome.arrival)
            .count();
        assert!(
            waiting + 1 >= QUEUE_MAX,
            "shed with only {waiting} waiting: {outcome:?}"
        );
        assert_eq!(outcome.done, outcome.arrival, "SlowDown is answered at once");
    }
    // Throughput is the node's capacity: served ≈ elapsed time × SLOTS / SERVICE.
    let elapsed = served.last().expect("served").done;
    let capacity = (elapsed.as_millis() as usize * SLOTS) / SERVICE.as_millis() as usize;
    assert!(
        served.len() <= capacity + SLOTS && served.len() + SLOTS >= capacity,
        "{} served in {elapsed:?}",
        served.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_nobody_reads_holds_the_slot_only_when_asked_to() {
    // Proves `hold_while_sending`: with one slot, a GET whose body is never read keeps the
    // slot, so the next request waits until that body is dropped; without the option the
    // slot is free as soon as the service time has passed.
    for hold in [false, true] {
        let config = ClusterConfig {
            nodes: 1,
            capacity: CapacityConfig {
                slots: 1,
                queue_max: 4,
                base: SERVICE,
                bandwidth_bytes_per_second: 0,
                hold_while_sending: hold,
                idle_timeout: None,
            },
            ..ClusterConfig::default()
        };
        let cluster = MockCluster::build(&config);
        let service = Arc::new(cluster.services[0].clone());
        assert_eq!(call(&service, "PUT", "/bucket").await, 200);
        let put = http::Request::builder()
            .method("PUT")
            .uri("/bucket/key")
            .header("host", "127.0.0.1")
            .header("content-length", "5")
            .body(s3s::Body::from(bytes::Bytes::from_static(b"hello")))
            .expect("valid request");
        assert_eq!(service.call(put).await.status(), 200);

        let unread = service.call(request("GET", "/bucket/key")).await;
        assert_eq!(unread.status(), 200);
        let start = Instant::now();
        let next = {
            let service = service.clone();
            tokio::spawn(async move { call(&service, "HEAD", "/bucket").await })
        };
        tokio::time::sleep(SERVICE * 10).await;
        assert_eq!(next.is_finished(), !hold, "hold_while_sending = {hold}");
        drop(unread);
        assert_eq!(next.await.expect("request task"), 200);
        let waited = start.elapsed();
        if hold {
            assert!(waited >= SERVICE * 11, "waited {waited:?}");
        } else {
            assert!(waited <= SERVICE * 10, "waited {waited:?}");
        }
    }
}
