"""boto3 and awscli against a mock cluster (driven by python_clients.rs).

Usage: python_clients.py ENDPOINT1 ENDPOINT2 ... (access key and secret in the environment).
Exits non-zero, with the failing step, if any client operation misbehaves.
"""
import hashlib
import os
import subprocess
import sys
import tempfile

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoints = sys.argv[1:]
clients = [
    boto3.client("s3", endpoint_url=e, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    for e in endpoints
]
first, last = clients[0], clients[-1]

first.create_bucket(Bucket="pyclients")
first.put_object(Bucket="pyclients", Key="dir/hello world.txt", Body=b"hello from boto3", ContentType="text/plain")
got = last.get_object(Bucket="pyclients", Key="dir/hello world.txt")
assert got["Body"].read() == b"hello from boto3", "boto3 read back through another node"
assert got["ContentType"] == "text/plain"
keys = [o["Key"] for o in clients[1 % len(clients)].list_objects_v2(Bucket="pyclients", Prefix="dir/")["Contents"]]
assert keys == ["dir/hello world.txt"], keys

# Multipart through boto3's transfer manager: 12 MiB in 5 MiB parts.
data = os.urandom(12 * 1024 * 1024)
with tempfile.NamedTemporaryFile() as source:
    source.write(data)
    source.flush()
    first.upload_file(source.name, "pyclients", "big.bin",
                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
head = last.head_object(Bucket="pyclients", Key="big.bin")
assert head["ETag"].endswith('-3"'), head["ETag"]
assert hashlib.sha256(last.get_object(Bucket="pyclients", Key="big.bin")["Body"].read()).digest() == hashlib.sha256(data).digest()

# awscli: list and copy down through the last node.
env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
listing = subprocess.run(["aws", "--endpoint-url", endpoints[-1], "s3", "ls", "s3://pyclients/", "--recursive"],
                         check=True, capture_output=True, text=True, env=env).stdout
assert "big.bin" in listing and "dir/hello world.txt" in listing, listing
with tempfile.TemporaryDirectory() as target:
    path = os.path.join(target, "big.bin")
    subprocess.run(["aws", "--endpoint-url", endpoints[0], "s3", "cp", "s3://pyclients/big.bin", path, "--only-show-errors"],
                   check=True, env=env)
    with open(path, "rb") as copied:
        assert copied.read() == data, "awscli download differs"

# Server-side copies of a large object: boto3's managed copy() and awscli's s3-to-s3 cp send
# UploadPartCopy (in 5 MiB and 8 MiB parts).
first.copy({"Bucket": "pyclients", "Key": "big.bin"}, "pyclients", "big-copy.bin",
           Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
copied = last.get_object(Bucket="pyclients", Key="big-copy.bin")
assert copied["ETag"].endswith('-3"'), copied["ETag"]
assert copied["Body"].read() == data, "boto3 copy() differs"
subprocess.run(["aws", "--endpoint-url", endpoints[-1], "s3", "cp", "s3://pyclients/big.bin",
                "s3://pyclients/cli-copy.bin", "--only-show-errors"], check=True, env=env)
assert last.get_object(Bucket="pyclients", Key="cli-copy.bin")["Body"].read() == data, "awscli s3 cp s3->s3 differs"

# A key with `+` and a space is removed by `aws s3 rm --recursive` (it lists with
# encoding-type=url), and then the bucket goes.
first.put_object(Bucket="pyclients", Key="odd/a+b c.txt", Body=b"x")
subprocess.run(["aws", "--endpoint-url", endpoints[0], "s3", "rm", "s3://pyclients/", "--recursive", "--only-show-errors"],
               check=True, env=env)
assert "Contents" not in last.list_objects_v2(Bucket="pyclients"), "aws s3 rm --recursive left keys"
subprocess.run(["aws", "--endpoint-url", endpoints[-1], "s3", "rb", "s3://pyclients"], check=True, env=env,
               capture_output=True)
print("python clients OK")
