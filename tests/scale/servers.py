"""Servers of the scale-out tests, started on spare ports: a PgBouncer in transaction pooling
mode in front of the shared PostgreSQL, and a Redis master + replica + three sentinels.

Used by tests/scale/ (and bench/soak.py needs none of them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.faults.servers import REDIS_SERVER, free_port, wait_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """PgBouncer (Debian's package) in ``pool_mode`` (transaction by default) in front of
    `upstream_port` on 127.0.0.1, trusting every client. Any database name is forwarded (the
    ``*`` fallback), so a test database created directly is reachable through it at once."""

    def __init__(self, upstream_port: int = 5432, pool_mode: str = "transaction") -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="prosaas-pgbouncer-"))
        self.proc: subprocess.Popen | None = None
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={upstream_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            "max_client_conn = 1000\n"
            "default_pool_size = 20\n"
            # the test databases come and go: forget a dropped one's servers quickly
            "server_lifetime = 60\n"
            "server_idle_timeout = 10\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        os.chmod(self.dir, 0o777)

    def server(self) -> str:
        """The SQLAlchemy server URL (append ``/dbname``)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"

    def start(self) -> PgBouncer:
        cmd = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A Redis master, one replica and three sentinels watching them as `master_name`, each on
    a spare port, nothing on disk. ``down_after_ms`` is small so a failover takes a second or
    two, not the 30 s default."""

    def __init__(self, master_name: str = "prosaas", down_after_ms: int = 1000) -> None:
        self.name = master_name
        self.down_after_ms = down_after_ms
        self.dir = Path(tempfile.mkdtemp(prefix="prosaas-sentinel-"))
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    def _redis(self, port: int, *extra: str) -> None:
        d = self.dir / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(d), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port)

    def start(self) -> SentinelCluster:
        self._redis(self.master_port)
        self._redis(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.name} 5000\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
            self.procs[port] = subprocess.Popen(
                [REDIS_SERVER, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_port(port)
        self.wait_replica_synced()
        return self

    def client(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def wait_replica_synced(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                info = self.client(self.replica_port).info("replication")
                if info.get("master_link_status") == "up":
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise TimeoutError("the replica never synced with the master")

    @property
    def sentinels_env(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def master_addr(self) -> tuple[str, int] | None:
        """The master the sentinels name now (None when none answers)."""
        for port in self.sentinel_ports:
            try:
                host, p = self.client(port).execute_command(
                    "SENTINEL", "get-master-addr-by-name", self.name
                )
                return host.decode(), int(p)
            except Exception:
                continue
        return None

    def freeze(self, port: int) -> None:
        """Hung, not down (SIGSTOP): connections are accepted, nothing is answered."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def thaw(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:  # SIGKILL ends a stopped one too
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)
