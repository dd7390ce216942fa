"""Helpers of tests/test_remote.py: an S3 server on loopback, git/dvc subprocesses, the tiny pipeline repository.

Running commands, cloning and reading DVC's output come from helpers.py; `run` here only changes the
defaults: an environment without the AWS settings of whoever runs the tests, and a time limit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import git_commit

from signdigits import devtools
from signdigits.devtools import venv_env

BIN = Path(sys.executable).parent
BUCKET = "signdigits-remote"
# Requests moto answers before it starts checking signatures: create_user, put_user_policy, create_access_key.
BOOTSTRAP_REQUESTS = 3
NO_FILE = "/nonexistent/signdigits-tests"  # ~/.aws of whoever runs the tests must not count


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    """This venv first on PATH, no AWS settings of the person running the tests, no instance-metadata lookups."""
    env = {key: value for key, value in venv_env().items() if not key.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=f"{NO_FILE}/config",
        AWS_SHARED_CREDENTIALS_FILE=f"{NO_FILE}/credentials",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """devtools.run, with base_env() and a time limit unless told otherwise."""
    return devtools.run(args, cwd, check=check, env=env or base_env(), timeout=timeout)


def tracked_state(repo: Path) -> tuple[str, dict[str, bytes]]:
    """`git status` and the bytes of every file (ignored ones too) outside .git, the DVC cache and DVC's tmp."""
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo).stdout
    files = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".dvc/cache/", ".dvc/tmp/")):
            files[rel] = path.read_bytes()
    return status, files


@dataclass
class S3Server:
    """moto's standalone server on loopback with signature checks on, and the one IAM user allowed to use it."""

    url: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen
    log: Path

    def env(self, access_key_id: str | None = None, secret_access_key: str | None = None) -> dict[str, str]:
        """The environment of dvc subprocesses: credentials only here, never in a file."""
        return {
            **base_env(),
            "AWS_ACCESS_KEY_ID": access_key_id or self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret_access_key or self.secret_access_key,
        }

    def keys(self, prefix: str) -> list[str]:
        client = self.client("s3")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def client(self, service: str, access_key_id: str | None = None, secret_access_key: str | None = None):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
        )

    @classmethod
    def start(cls, log: Path) -> S3Server:
        executable = BIN / "moto_server"
        if not executable.exists():
            pytest.skip("moto_server is not installed (it comes with requirements/lock.txt: make setup)")
        port = free_port()
        env = {**base_env(), "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_REQUESTS)}
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(executable), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"moto_server did not start on {url}:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        server = cls(url, "bootstrap", "bootstrap", process, log)
        try:
            iam = server.client("iam")
            iam.create_user(UserName="dvc")
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            iam.put_user_policy(UserName="dvc", PolicyName="everything", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="dvc")["AccessKey"]
            server.access_key_id, server.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
            server.client("s3").create_bucket(Bucket=BUCKET)
        except Exception:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def add_remote(repo: Path, server: S3Server, prefix: str, name: str = "storage") -> None:
    """The README's commands: an S3 default remote with its endpoint, committed; no credentials."""
    run(["dvc", "remote", "add", "-d", name, f"s3://{BUCKET}/{prefix}"], cwd=repo)
    run(["dvc", "remote", "modify", name, "endpointurl", server.url], cwd=repo)
    run(["dvc", "remote", "modify", name, "connect_timeout", "10"], cwd=repo)
    git_commit(repo, "Add an S3 DVC remote")
