#!/usr/bin/env python3
"""Presigned URLs for the harness's policy-mode target (bench/storefront-policy.toml).

Usage: presign.py ENDPOINT OUTDIR
Writes OUTDIR/get-1k, OUTDIR/get-64m (one path each) and OUTDIR/put-1m (50 paths, one per
line) for the client key the proxy verifies, valid for 12 hours. wrk sends the same path
again and again, which a presigned URL allows within its expiry, as S3 does. Needs boto3.
"""
import sys
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

endpoint, out = sys.argv[1], sys.argv[2]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKBENCHCLIENT",
    aws_secret_access_key="bench-client-secret",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)


def path(method, key):
    url = s3.generate_presigned_url(
        method, Params={"Bucket": "bench", "Key": key}, ExpiresIn=12 * 3600
    )
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


with open(f"{out}/get-1k", "w") as f:
    print(path("get_object", "obj-1k"), file=f)
with open(f"{out}/get-64m", "w") as f:
    print(path("get_object", "obj-64m"), file=f)
with open(f"{out}/put-1m", "w") as f:
    for i in range(50):
        print(path("put_object", f"put-{i}"), file=f)
