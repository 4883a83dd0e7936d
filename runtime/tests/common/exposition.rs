//! Reading the Prometheus text exposition in tests, and the traffic the metrics tests send.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;

use super::Harness;

/// Round-robin balancing: the tests' few requests reach every backend (P2C over latency
/// would follow loopback noise and may leave one out).
pub const ROUND_ROBIN: &str = "[balance]\nalgorithm = \"round-robin\"\n";

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
pub fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            with.iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

/// Traffic through the proxy: a bucket, three objects, nine reads, one missing key.
pub async fn traffic(harness: &Harness) {
    let s3 = harness.client();
    s3.create_bucket().bucket("metrics").send().await.expect("create");
    for index in 0..3 {
        s3.put_object()
            .bucket("metrics")
            .key(format!("object-{index}"))
            .body(ByteStream::from(vec![7u8; 1000 * (index + 1)]))
            .send()
            .await
            .expect("put");
    }
    for index in 0..9 {
        s3.get_object()
            .bucket("metrics")
            .key(format!("object-{}", index % 3))
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body");
    }
    let missing = s3.get_object().bucket("metrics").key("absent").send().await;
    assert!(missing.is_err());
}
