"""Settings of a run on Ray, checked before anything starts."""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass

from robustbench_mm.errors import UsageError


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001", "host:6379"); None = start one here
    num_cpus: int | None = None  # CPUs of the local cluster started here (None: all of this machine's)
    cpus_per_task: float = 1.0  # also each task's torch CPU threads (rounded down, at least 1)
    gpus_per_task: float | None = None  # None: 1 when the cluster has GPUs, else 0; 0.5 packs two tasks per GPU
    max_retries: int = 3  # times a task is run again after its worker died
    shards: int = 1  # deformation and corruption evaluations and AutoAttack of each model split over this many ranges

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.address is not None:
            raise UsageError("--num-cpus sizes a local Ray cluster; a running cluster (--address) has its own CPUs")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise UsageError(f"--num-cpus must be >= 1, got {self.num_cpus}")
        if not 0 < self.cpus_per_task < math.inf:
            raise UsageError(f"--cpus-per-task must be a finite number > 0, got {self.cpus_per_task}")
        if self.gpus_per_task is not None and not 0 <= self.gpus_per_task < math.inf:  # NaN fails both
            raise UsageError(f"--gpus-per-task must be a finite number >= 0, got {self.gpus_per_task}")
        if self.max_retries < 0:
            raise UsageError(f"--max-retries must be >= 0, got {self.max_retries}")
        if not 1 <= self.shards <= MAX_SHARDS:
            raise UsageError(f"--shards must be from 1 to {MAX_SHARDS}, got {self.shards}")
        if self.address is not None:
            check_address(self.address)


MAX_SHARDS = 1024  # far more than any test set has batches; a shard per batch is the most that helps
CONNECT_TIMEOUT_S = 10.0
START_HINT = "start one there with `ray start --head --port=6379`, or leave out --address to start a local one"
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host:port'; None for 'auto' (Ray finds the cluster itself)."""
    if address == "auto":
        return None
    match = _HOST_PORT.match(address)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise UsageError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, ray://10.0.0.5:10001) or "
                         f"auto; to use a cluster, {START_HINT}")
    return match.group(1).strip("[]"), int(match.group(2))


def check_address(address: str) -> None:
    """--address is auto, HOST:PORT or ray://HOST:PORT, with a port in 1..65535 (checked before Ray is imported)."""
    _host_port(address)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Something listens at `address` (a TCP connection within `timeout` seconds), before Ray tries to join it:
    Ray itself waits minutes on an address where nothing answers."""
    host_port = _host_port(address)
    if host_port is None:
        return
    try:
        socket.create_connection(host_port, timeout=timeout).close()
    except OSError as exc:
        why = "no answer within {:g} s".format(timeout) if isinstance(exc, socket.timeout) else \
            (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"no Ray cluster reachable at --address {address!r} ({why}); {START_HINT}") from None
