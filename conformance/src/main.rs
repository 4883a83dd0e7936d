//! Run the conformance suite against an S3 endpoint:
//! `cargo run -p conformance -- --endpoint http://127.0.0.1:9000 --access-key K --secret-key S`.

use clap::Parser;

/// Storefront's S3 conformance suite, against any endpoint.
#[derive(Parser)]
struct Args {
    /// An endpoint of the service (repeat for several endpoints of one namespace).
    #[arg(long, required = true)]
    endpoint: Vec<String>,
    /// The access key to sign with.
    #[arg(long)]
    access_key: String,
    /// Its secret.
    #[arg(long)]
    secret_key: String,
    /// The region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Prefix of the buckets the cases create and remove.
    #[arg(long, default_value = "conformance")]
    bucket_prefix: String,
    /// Also run the SigV2 cases.
    #[arg(long)]
    sigv2: bool,
    /// Only cases whose names contain this.
    #[arg(long, default_value = "")]
    only: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut target = conformance::Target::new(
        &args.endpoint.join(", "),
        args.endpoint.clone(),
        &args.access_key,
        &args.secret_key,
    );
    target.region = args.region;
    target.bucket_prefix = args.bucket_prefix;
    target.sigv2 = args.sigv2;
    let report = conformance::run(&target, &args.only).await;
    print!("{}", report.table());
    if report.failed().is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
