"""A real S3-protocol server on loopback for the object-storage tests and bench/s3.py: moto's standalone
server in a child process, with IAM authentication on (wrong credentials are refused, as on S3), one
user allowed everything, and one bucket.

The credentials and the endpoint reach synthgen the ways users pass them: the environment variables
botocore reads (:meth:`S3Server.env`: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``), or ``--storage-option`` flags (:meth:`S3Server.flags`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from helpers.processes import free_port

REGION = "us-east-1"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
SETUP_ACTIONS = 3  # create_user, create_access_key, put_user_policy: moto authenticates every later request


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    bucket: str

    def env(self, *, endpoint: bool = True) -> dict[str, str]:
        """The environment variables that give botocore (so s3fs, so synthgen) the credentials and,
        with ``endpoint``, the server."""
        env = {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
        }
        return env | ({"AWS_ENDPOINT_URL": self.endpoint} if endpoint else {})

    def flags(self, *, credentials: bool = False, **overrides: str) -> list[str]:
        """``--storage-option`` flags for the endpoint (and, with ``credentials``, the keys)."""
        options = {"endpoint_url": self.endpoint}
        if credentials:
            options |= {"key": self.key, "secret": self.secret}
        options |= overrides
        return [flag for k, v in options.items() for flag in ("--storage-option", f"{k}={v}")]

    def fs(self):
        """An s3fs file system of the server (a fresh instance: no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key, secret=self.secret, endpoint_url=self.endpoint, skip_instance_cache=True
        )

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def keys(self) -> set[str]:
        """Every object in the bucket."""
        return set(self.fs().find(self.bucket))


def _wait_until_up(endpoint: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {endpoint} within {timeout:.0f} s")


@contextlib.contextmanager
def moto_s3(bucket: str = "bucket") -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port, create a user with keys and ``bucket``; stop
    the server afterwards."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(endpoint, proc)
        anonymous = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, **anonymous)
        iam.create_user(UserName="synthgen")
        key = iam.create_access_key(UserName="synthgen")["AccessKey"]
        iam.put_user_policy(UserName="synthgen", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], bucket)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=server.key,
            aws_secret_access_key=server.secret,
        )
        s3.create_bucket(Bucket=bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
