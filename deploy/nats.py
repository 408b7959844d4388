"""NATS with JetStream for the cluster's events (docs/deploy.md "Events"): CLUSTER_NATS_NODES
nats-servers (3 by default: a JetStream cluster, so the INVESTMENTS stream is kept on three
servers, R3, and survives the loss of one; 1: a single server, R1), each with its own store
under the runtime folder, listening on 127.0.0.1 only. The instances' relays get every server's
URL (nats-py connects to one that answers)."""

from __future__ import annotations

from functools import partial
from typing import Any

from deploy.config import ClusterConfig
from deploy.processes import spawn, wait
from deploy.tools import program
from harness.nats import GO_RUNTIME
from harness.sockets import port_in_use


def server_config(config: ClusterConfig, n: int) -> str:
    """nats-server's configuration for node n (0-based)."""
    store = config.runtime / "nats" / f"n{n + 1}"
    lines = [
        f"server_name: n{n + 1}",
        f"listen: 127.0.0.1:{config.nats_ports[n]}",
        # JetStream's memory and disk bounds: the stream is file-backed and small (events are
        # kept NATS_STREAM_MAX_AGE_HOURS); the defaults (75 % of memory and of the disk) would
        # let a runaway stream take the machine.
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 8GB }}',
    ]
    if len(config.nats_ports) > 1:
        routes = ", ".join(
            f"nats-route://127.0.0.1:{port}"
            for i, port in enumerate(config.nats_route_ports)
            if i != n
        )
        lines.append(
            f"cluster {{ name: investments, listen: 127.0.0.1:{config.nats_route_ports[n]},"
            f" routes: [{routes}] }}"
        )
    return "\n".join(lines) + "\n"


def start(config: ClusterConfig, state: dict[str, Any]) -> dict[str, str]:
    """Start the nats-servers (recorded in state); the settings the instances' relays need."""
    binary = program("nats-server") or "nats-server"
    for n, port in enumerate(config.nats_ports):
        (config.runtime / "nats" / f"n{n + 1}").mkdir(parents=True, exist_ok=True)
        path = config.runtime / f"nats{n + 1}.conf"
        path.write_text(server_config(config, n))
        entry = spawn(f"nats{n + 1}", [binary, "-c", str(path)], dict(GO_RUNTIME), config.runtime)
        state["processes"].append(entry)
        wait(f"nats{n + 1}", partial(port_in_use, "127.0.0.1", port, 0.5), entry,
             config.runtime, 15)  # fmt: skip
    urls = ",".join(f"nats://127.0.0.1:{port}" for port in config.nats_ports)
    state["nats_url"] = urls
    return {"NATS_URL": urls, "NATS_STREAM_REPLICAS": str(min(3, len(config.nats_ports)))}
