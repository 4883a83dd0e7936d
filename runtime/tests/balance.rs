//! The default algorithm's spread, end to end. A binary of its own: the test measures how
//! evenly load falls on equal nodes, and the other end-to-end tests running beside it in one
//! binary (in parallel, on a 2-core machine) would make that a measure of their noise.

mod common;

use common::harness;

#[tokio::test]
async fn p2c_spreads_concurrent_load_evenly_and_sequential_load_broadly() {
    // Proves the default algorithm: under concurrent load (where in-flight counts drive it)
    // equal nodes get equal shares within ±10%; with one sequential client it follows latency
    // noise by design, but still uses every node (no node under half or over 1.5× its share).
    // Peak-EWMA remembers a slow sample for about `decay`; on this shared machine scheduler
    // noise makes such samples common, and the default 10 s memory would let one of them decide
    // a two-second test. A 1 s decay keeps the test about the algorithm, not the noise.
    let harness = harness(3, "[balance]\ndecay = \"1s\"\n").await;
    let s3 = common::bucket_with_object(&harness, 10).await;
    // Warm up first: the measured rounds start with every connection dialled and every
    // estimate made from steady-state samples, not from a cold start's first requests.
    concurrent_heads(&s3, 16, 50).await;
    let warm = common::head_counts(&harness);
    concurrent_heads(&s3, 16, 250).await;
    let after = common::head_counts(&harness);
    let concurrent: Vec<u64> = after.iter().zip(&warm).map(|(all, before)| all - before).collect();
    assert_eq!(concurrent.iter().sum::<u64>(), 4000);
    for count in &concurrent {
        assert!(
            (1200..=1467).contains(count),
            "concurrent: per-node counts {concurrent:?}"
        );
    }
    for _ in 0..3000 {
        s3.head_object()
            .bucket("data")
            .key("object")
            .send()
            .await
            .expect("HeadObject");
    }
    let total = common::head_counts(&harness);
    let sequential: Vec<u64> = total.iter().zip(&after).map(|(all, before)| all - before).collect();
    for count in &sequential {
        assert!(
            (500..=1500).contains(count),
            "sequential: per-node counts {sequential:?}"
        );
    }
}

/// `clients` concurrent clients, each sending `each` HeadObject calls one after another.
async fn concurrent_heads(s3: &aws_sdk_s3::Client, clients: usize, each: usize) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let s3 = s3.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                s3.head_object()
                    .bucket("data")
                    .key("object")
                    .send()
                    .await
                    .expect("HeadObject");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
}
