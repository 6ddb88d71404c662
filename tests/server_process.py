"""Start the real `crossrank serve` process on a free 127.0.0.1 port and talk HTTP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from conftest import subprocess_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A running server: ``url``, ``log()`` (its stderr so far), ``stop()`` (SIGTERM, then the exit code)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="crossrank-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crossrank", "serve", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(**(env or {})),
        )

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self, api_key: str | None = None, timeout: float = 120) -> ServerProcess:
        deadline = time.monotonic() + timeout
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/ready", headers=headers, timeout=2)
                if response.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        os.unlink(self._log.name)
        return self.process.returncode


@contextmanager
def running_server(
    args: list[str], env: dict[str, str] | None = None, *, api_key: str | None = None
) -> Iterator[ServerProcess]:
    """A ready server for the block; stopped (SIGTERM) after it."""
    server = ServerProcess(args, env)
    try:
        yield server.wait_ready(api_key)
    finally:
        server.stop()


@contextmanager
def running_servers(count: int, args: list[str], env: dict[str, str] | None = None) -> Iterator[list[ServerProcess]]:
    """``count`` ready servers with the same arguments, started together so that their start-ups overlap."""
    servers: list[ServerProcess] = []
    try:
        servers.extend(ServerProcess(args, env) for _ in range(count))
        yield [server.wait_ready() for server in servers]
    finally:
        for server in servers:
            server.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name != name:
            continue
        found = ",".join(sorted(sample_labels.rstrip("}").split(","))) if sample_labels else ""
        if found == want:
            return float(value)
    return 0.0
