"""Servers only the tests start (``flashsale dev``'s own are in ``service/cli/dev_servers.py``)."""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from redis import Redis

from service.cli.dev_servers import Server, find_program, port_open, serving, wait_until


def _free_cluster_port() -> int:
    """A port free together with port + 10000 (a cluster node's bus port), both below Linux's
    ephemeral range (32768+), where an outgoing connection could take the bus port first."""
    while True:
        port = random.randint(20_000, 22_767)
        if not port_open("127.0.0.1", port, 0.05) and not port_open("127.0.0.1", port + 10_000, 0.05):
            return port


def _cluster_ok(ports: list[int]) -> bool:
    for port in ports:
        with Redis(port=port, socket_timeout=1) as node:
            if node.cluster("INFO").get("cluster_state") != "ok":
                return False
    return True


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``nodes`` primaries (no replicas), for the limiter's cluster mode."""
    program, cli = find_program("redis-server"), find_program("redis-cli")
    ports = [_free_cluster_port() for _ in range(nodes)]
    with tempfile.TemporaryDirectory(prefix="flashsale-cluster-") as directory, ExitStack() as servers:
        for port in ports:
            node_dir = Path(directory) / str(port)
            node_dir.mkdir()
            command = [program, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes"]
            command += ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"]
            node = Server([*command, "--dir", str(node_dir)], port, f"cluster node {port}", 10, "")
            servers.enter_context(serving(node))
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: _cluster_ok(ports), 30, "cluster_state:ok", interval=0.2)
        yield f"redis://127.0.0.1:{ports[0]}/0"
