//! `storefront demo`: a 3-node s3-mock cluster in-process with the proxy in front of it.

use std::net::{IpAddr, Ipv4Addr};

use s3_mock::{ClusterConfig, MockCluster};

/// Access key the demo's storage nodes accept; only the proxy holds it.
pub const BACKEND_ACCESS_KEY: &str = "demo-backend";
/// Secret of [`BACKEND_ACCESS_KEY`].
pub const BACKEND_SECRET_KEY: &str = "demo-backend-secret";

/// The demo configuration for nodes at `backends`.
pub fn config_text(listen: &str, admin: &str, backends: &[String]) -> String {
    let list = backends
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# storefront demo: a local 3-node S3 cluster behind the proxy.
[server]
listen = "{listen}"

[admin]
listen = "{admin}"

# Callers are identified by their SigV4 signature (the demo key pair below: signatures are
# verified) or, unsigned, by source address: this machine (loopback) is identity `cidr:demo`.
# Anyone else is anonymous and denied.
[auth]
mode = "policy"

[[auth.keys]]
access_key = "demo"
secret_key = "demo"
name = "demo"

[[auth.cidrs]]
name = "demo"
networks = ["127.0.0.0/8", "::1/128"]
zone = "local"

# Both demo identities (the only ones this configuration establishes) may do anything.
[[policy.rules]]
name = "demo-may-do-anything"
effect = "allow"
identity = {{ any = true }}
actions = ["read", "list", "write", "delete", "multipart", "bucket-admin"]
buckets = ["*"]

[[pools]]
name = "local"
zone = "local"
backends = [{list}]

[pools.credentials]
access_key = "{BACKEND_ACCESS_KEY}"
secret_key = "{BACKEND_SECRET_KEY}"
"#
    )
}

/// Start the demo's storage cluster: 3 nodes on loopback, any free ports.
pub async fn start_cluster() -> std::io::Result<Vec<s3_mock::NodeHandle>> {
    let config = ClusterConfig {
        nodes: 3,
        credentials: Some((BACKEND_ACCESS_KEY.into(), BACKEND_SECRET_KEY.into())),
        wall_clock: true,
        ..ClusterConfig::default()
    };
    MockCluster::start_tcp(&config, IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await
}

/// What the demo prints once it is up.
pub fn banner(endpoint: &str, admin: &str, backends: &[String]) -> String {
    format!(
        "storefront demo is up.\n\
         \n  S3 endpoint:  http://{endpoint}   (path-style; demo access key pair: demo / demo, verified; unsigned requests from this machine are identity `cidr:demo`)\
         \n  admin:        http://{admin}/admin/backends   /healthz   /readyz\
         \n  metrics:      http://{admin}/metrics   (Prometheus text; the access log is the JSON lines below)\
         \n  live view:    http://{admin}/dashboard   (each node's share, in-flight, latency and health)\
         \n  storage:      3 s3-mock nodes at {nodes}\n\
         \naws-cli:\
         \n  export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1\
         \n  aws --endpoint-url http://{endpoint} s3 mb s3://demo\
         \n  aws --endpoint-url http://{endpoint} s3 cp README.md s3://demo/README.md\
         \n  aws --endpoint-url http://{endpoint} s3 ls s3://demo/\n\
         \nboto3:\
         \n  python3 -c \"import boto3; s3 = boto3.client('s3', endpoint_url='http://{endpoint}', aws_access_key_id='demo', aws_secret_access_key='demo', region_name='us-east-1'); s3.create_bucket(Bucket='demo2'); s3.put_object(Bucket='demo2', Key='hello.txt', Body=b'hello'); print(s3.get_object(Bucket='demo2', Key='hello.txt')['Body'].read())\"\n\
         \nPress Ctrl-C to stop.",
        nodes = backends.join(", "),
    )
}
