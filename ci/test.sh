#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Python S3 clients (boto3, awscli, s3cmd) are part of the suite.
if ! python3 -c 'import boto3' 2>/dev/null || ! command -v aws >/dev/null 2>&1 || ! command -v s3cmd >/dev/null 2>&1; then
  echo "installing boto3, awscli and s3cmd (pip)"
  python3 -m pip install --quiet --disable-pip-version-check boto3 awscli s3cmd
fi

# The conformance suite's second server: s3s-fs, the s3s project's reference server, built
# from source (about 4 CPU-minutes once; cargo keeps it in ~/.cargo/bin).
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "installing s3s-fs 0.14.1 (cargo install)"
  cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary
fi
export CONFORMANCE_S3S_FS=required

cargo test --workspace "$@"
