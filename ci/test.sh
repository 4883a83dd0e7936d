#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Python S3 clients (boto3, awscli, s3cmd) are part of the suite.
if ! python3 -c 'import boto3' 2>/dev/null || ! command -v aws >/dev/null 2>&1 || ! command -v s3cmd >/dev/null 2>&1; then
  echo "installing boto3, awscli and s3cmd (pip)"
  python3 -m pip install --quiet --disable-pip-version-check boto3 awscli s3cmd
fi

cargo test --workspace "$@"
