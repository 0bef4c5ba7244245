"""A real S3 API on loopback for tests and benchmarks: moto's server mode, s3fs as the client.

The credentials are moto's dummies and reach s3fs only through the environment (the
backend refuses them in settings); the endpoint is a plain, non-secret storage option.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    bucket: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def options(self, prefix: str) -> dict[str, Any]:
        """``[plugins.fsspec]`` for this server: URL and endpoint, no credentials."""
        return {"url": self.url(prefix), "storage_options": {"client_kwargs": {"endpoint_url": self.endpoint}}}

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint})

    def keys(self, prefix: str) -> list[str]:
        fs = self.fs()
        fs.invalidate_cache()
        return sorted(p for p in fs.find(f"{self.bucket}/{prefix}"))


@contextmanager
def moto_s3(env: Any, bucket: str = "selfiescope-test") -> Iterator[S3]:
    """Start moto's threaded server on 127.0.0.1 (a free port), set the dummy credentials with
    ``env`` (a pytest MonkeyPatch, or anything with ``setenv``), create ``bucket``."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in DUMMY_ENV.items():
            env.setenv(k, v)
        s3 = S3(f"http://127.0.0.1:{port}", bucket)
        s3.fs().mkdir(bucket)
        yield s3
    finally:
        server.stop()
