//! Cost of classifying request heads of the shapes real SDKs send.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Uri};
use std::hint::black_box;
use storefront_core::s3::{ClassifyConfig, classify_head};

fn bench_classify(c: &mut Criterion) {
    let config = ClassifyConfig::with_base_domains(["s3.example.com"]);
    let cases: [(&str, Method, &str, &str); 4] = [
        (
            "get_path_style",
            Method::GET,
            "/bucket/dir/object-0001.parquet",
            "10.0.0.1:9000",
        ),
        (
            "get_virtual_host",
            Method::GET,
            "/dir/object-0001.parquet",
            "bucket.s3.example.com",
        ),
        (
            "upload_part_encoded",
            Method::PUT,
            "/bucket/a%20b/%E6%97%A5.bin?partNumber=12&uploadId=2~abcdefghijklmnop",
            "10.0.0.1:9000",
        ),
        (
            "list_v2",
            Method::GET,
            "/bucket?list-type=2&prefix=logs%2F2026%2F&delimiter=%2F&max-keys=1000",
            "10.0.0.1:9000",
        ),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, method, uri, host) in cases {
        let uri: Uri = uri.parse().expect("bench uri");
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static(host));
        headers.insert("x-amz-content-sha256", HeaderValue::from_static("UNSIGNED-PAYLOAD"));
        headers.insert("content-length", HeaderValue::from_static("1048576"));
        group.bench_function(name, |b| {
            b.iter(|| classify_head(black_box(&method), black_box(&uri), black_box(&headers), &config))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
