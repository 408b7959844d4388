from pathlib import Path
import tempfile
from deploy.cluster import up, down
from deploy.config import ClusterConfig
from tests.support import free_port
rt = Path(tempfile.mkdtemp(prefix="dbg-", dir=".data"))
config = ClusterConfig(runtime=rt.resolve(), port=free_port(), stats_port=free_port(), instance_ports=(free_port(), free_port(), free_port()), pgbouncer_port=free_port(), patroni=True, etcd_port=free_port(), etcd_peer_port=free_port(), patroni_api_ports=(free_port(), free_port(), free_port()), member_ports=(free_port(), free_port(), free_port()), primary_port=free_port(), replica_port=free_port(), database_stats_port=free_port())
print(config)
try:
    up(config)
except Exception as e:
    print("FAILED", e)
print(rt)
