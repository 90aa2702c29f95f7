"""The daemon's life: run in the foreground, detach, stop and report status.

A data dir belongs to one kvd at a time: `LOCK` is held with flock for the life of the
process (the kernel drops it if the process dies, so a crash never leaves a stale lock), and
`kvd.pid` says who holds it, so `kvd stop` can find the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from kvd.cluster.cluster import Cluster
from kvd.cluster.peers import Peers, load_members, next_epoch
from kvd.cluster.peerwire import Dest, Out
from kvd.cluster.settings import Settings
from kvd.config import Config, ConfigError, data_root, log_path, read_keyring
from kvd.consensus import Consensus
from kvd.doors import metrics
from kvd.doors.http import HttpDoor
from kvd.doors.httproutes import Router
from kvd.doors.native import NativeDoor
from kvd.doors.resp import RespDoor
from kvd.doors.starting import StartingDoor
from kvd.doors.tls import server_context
from kvd.doors.zap import Gatekeeper
from kvd.loop import SHUTDOWN_GRACE_S, Loop, NullLog
from kvd.state.access import is_loopback
from kvd.state.hlc import wall_ms
from kvd.state.node import Node
from shared.client import Client
from shared.codec import MsgType
from shared.errors import KvError, ServerError, Unreachable
from shared.keyring import Keyring

log = logging.getLogger("kvd")
PID_FILE = "kvd.pid"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class StartupError(KvError):
    code = "STARTUP"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise StartupError(
                f"data dir {data_dir} is held by another kvd (pid {holder}) — stop it first "
                "(kvd stop --data-dir ...) or use another --data-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_foreground(cfg: Config, repair: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    setup_logging(cfg.log_level)
    tls = tls_contexts(cfg)  # a certificate that will not load fails before the log replays
    ring = read_keyring(cfg.cluster_secret_file) if cfg.cluster_secret_file else None
    fd_limit = raise_fd_limit()
    assert cfg.data_dir is not None and cfg.name is not None
    lock = DataDirLock(cfg.data_dir)
    pid_file = cfg.data_dir / PID_FILE
    try:
        node = Node(cfg.name, cfg.address, max_value=cfg.max_value_size)
        node.info_sources.append(
            lambda: {"pid": os.getpid(), "data_dir": str(cfg.data_dir), "port": cfg.port,
                     "open_files_limit": fd_limit}
        )
        # The HTTP port answers 503 "starting" while the log replays (kvd.doors.starting)
        with starting(cfg, tls[1]) as early:
            log_ = open_log(cfg, node, repair)  # replays first: the cluster starts from node.seq
            node.reload_users()
            try:
                protect(cfg, node)
            except KvError:
                log_.close()
                raise
            listener = early.hand_over() if early is not None else None
        try:
            loop = open_loop(cfg, node, log_, tls, ring, listener)
        except KvError:
            log_.close()
            raise
        try:
            peers = open_cluster(cfg, node, loop, ring)
            loop.attach(peers)
            loop.attach_consensus(open_consensus(cfg, node, peers))
        except KvError:
            loop.close()
            raise
        pid_file.write_text(json.dumps({"pid": os.getpid(), "name": cfg.name, "port": cfg.port}))
        loop.install_signal_handlers()
        log.info("%s serving on tcp://%s:%d (data %s)", cfg.name, cfg.bind, cfg.port, cfg.data_dir)
        if tls[0] is not None:
            log.info("TLS only on the Redis and HTTP doors (certificate %s%s)", cfg.tls_cert,
                     f"; clients need one signed by {cfg.tls_ca}" if cfg.tls_ca else "")
        if ring is not None:
            log.info("encrypted (CURVE) on the client port and to peers: server key %s "
                     "(%d previous secret(s) accepted from peers)", ring.current.public.decode(),
                     len(ring.pairs) - 1)
        try:
            loop.run()
        finally:
            loop.close()
        log.info("%s stopped", cfg.name)
        return 0
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def protect(cfg: Config, node: Node) -> None:
    """Protected mode: an open node (no user) listens on loopback only, unless told."""
    if is_loopback(cfg.bind):
        return
    if cfg.cluster_secret_file is None:
        log.warning("listening on %s without a cluster secret: peers are not authenticated "
                    "and the peer traffic is not encrypted — anything that reaches these ports "
                    "can speak the peer protocol (kvd secret new FILE; --cluster-secret-file)",
                    cfg.bind)
    if len(node.users):
        return
    if not cfg.insecure:
        raise ConfigError(
            f"refusing to listen on {cfg.bind} with no user defined (anyone who reaches it "
            "could read and change everything) — add an admin first (start on 127.0.0.1, "
            "then kvd user add NAME --admin) or pass --insecure")
    log.warning("listening on %s with no user defined (--insecure): anyone who reaches this "
                "node can read and change everything", cfg.bind)


def tls_contexts(cfg: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The Redis door's and the HTTP door's TLS (None, None without --tls-cert)."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None, None
    return (server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca),
            server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca, alpn=("http/1.1",)))


def starting(cfg: Config, tls: ssl.SSLContext | None
             ) -> contextlib.AbstractContextManager[StartingDoor | None]:
    """The HTTP door's stand-in during the replay; nothing when the door is closed."""
    if not cfg.http_port:
        return contextlib.nullcontext()
    return StartingDoor(cfg.bind, cfg.http_port, tls)


def open_loop(cfg: Config, node: Node, log_,  # noqa: ANN001
              tls: tuple[ssl.SSLContext | None, ssl.SSLContext | None] | None = None,
              ring: Keyring | None = None, http_listener: socket.socket | None = None) -> Loop:
    """The loop and its doors; a door that cannot bind closes the ones opened before it.
    With a keyring, the ZAP handler starts first: a CURVE handshake that finds none is let
    through by libzmq. `http_listener`: the HTTP port, already bound (kvd.doors.starting);
    closed here too if the loop cannot be made."""
    resp_tls, http_tls = tls if tls is not None else tls_contexts(cfg)
    gate = None
    if ring is not None:
        gate = Gatekeeper(ring)
        gate.start()
    try:
        native = NativeDoor(node, cfg.bind, cfg.port, curve=ring.current if ring else None)
    except KvError:
        if gate is not None:
            gate.stop()
        if http_listener is not None:
            http_listener.close()
        raise
    doors: list = []
    made: list[Loop] = []  # the loop, once made: /health and /metrics read it
    try:
        if cfg.resp_port:
            doors.append(RespDoor(node, cfg.bind, cfg.resp_port, cfg.maxclients, resp_tls))
        if cfg.http_port:
            collector = metrics.Collector(node, lambda: made[0].turns if made else None)
            router = Router(node, lambda: made[0].health() if made else (False, "starting"),
                            lambda: metrics.render(collector))
            doors.append(HttpDoor(node, cfg.bind, cfg.http_port, router,
                                  cfg.http_header_timeout, http_tls, http_listener))
    except KvError:
        for door in doors:
            door.close()
        if http_listener is not None:
            http_listener.close()  # the RESP door failed first: the HTTP door never took it
        native.close()
        if gate is not None:
            gate.stop()
        raise
    grace = SHUTDOWN_GRACE_S if cfg.http_port else 0.0
    made.append(Loop(node, native, log_, tuple(doors), gate, grace))
    return made[0]


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one; return the limit now in force.

    Every client connection holds a descriptor. The soft limit (often 1024) is a default for
    programs that never need many; the hard limit is what the operator allows, so a server
    takes it all (Redis raises its own too) instead of leaving clients waiting at 1,000.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    # An unlimited hard limit (BSDs; Linux caps it at nr_open) gets a large finite soft one.
    target = hard if hard != infinity else 1 << 20
    if soft == infinity or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s — at most about %d "
                    "clients can connect", soft, target, exc, soft)
        return soft
    log.info("open-file limit raised from %d to %d", soft, target)
    return target


def open_cluster(cfg: Config, node: Node, loop: Loop, ring: Keyring | None = None) -> Peers:
    """The cluster core and its sockets; rejoins the members known from the last run."""
    assert cfg.data_dir is not None and cfg.gossip_port is not None
    settings = Settings(cluster=cfg.cluster, tombstone_max_age_ms=cfg.tombstone_max_age * 1000,
                        max_clock_offset_ms=cfg.max_clock_offset_ms)
    now = wall_ms()
    core = Cluster(node, f"{cfg.connect_host}:{cfg.gossip_port}", settings, now,
                   seeds=cfg.join, known=load_members(cfg.data_dir),
                   epoch=next_epoch(cfg.data_dir, now), http=cfg.http_url)
    return Peers(core, cfg.bind, cfg.gossip_port, cfg.data_dir, loop.poller, cfg.gossip_hwm,
                 cfg.peer_max_message, ring)


def open_consensus(cfg: Config, node: Node, peers: Peers) -> Consensus:
    """The Raft group beside the keyspace (kvd.consensus), over the cluster's peer sockets.
    A node founds a group of one only when it starts fresh without --join: a node that
    knows members (from --join or a previous run) waits to be added to theirs."""
    assert cfg.data_dir is not None and cfg.name is not None
    core = peers.cluster
    fresh = not cfg.join and not core.ms.others()

    def send(name: str, body: dict) -> bool:
        member = core.ms.get(name)
        if member is None or member is core.ms.me:
            return False
        peers.route([Out(Dest.REQUEST, core.out.message(MsgType.RAFT, body), member.address)])
        return True

    def members() -> list[tuple[str, str]]:
        return [(m.name, m.status.value) for m in core.ms.members.values()]

    consensus = Consensus(cfg.name, cfg.data_dir, fresh, send, members)
    core.on_raft = consensus.receive
    node.coordinator = consensus.submit
    node.observer = consensus.observers.observe
    node.operator = consensus.operate
    if not fresh and not consensus.has_group and load_members(cfg.data_dir):
        # Known members from an earlier run but no Raft state: either this node waits to be
        # added by the group's leader, or the cluster predates the group and none will come.
        log.warning("this node has no consensus group state; its leader adds it shortly — "
                    "unless the cluster was upgraded from a version without one: then run "
                    "`kvd raft init` on one node (see README, Coordination)")
    view = node.members_source
    if view is not None:
        def with_roles(now: int) -> list[dict]:
            rows = view(now)
            for row in rows:
                row["raft"] = consensus.role_of(str(row.get("name", "")))
            return rows

        node.members_source = with_roles
    return consensus


def open_log(cfg: Config, node: Node, repair: bool = False):
    """The durability layer for this node (kvd.log.wal), after replaying it; or no log at all."""
    if not cfg.appendonly:
        log.warning("appendonly = false: nothing is written to disk")
        return NullLog()
    from kvd.log.recovery import open_log as recover_and_open

    assert cfg.data_dir is not None
    return recover_and_open(
        cfg.data_dir, node, cfg.fsync, repair, compaction_ratio=cfg.compaction_ratio,
        compaction_min_size=cfg.compaction_min_size, tombstone_max_age_s=cfg.tombstone_max_age,
    )


def start_detached(cfg: Config, argv: list[str]) -> int:
    """Run `kvd start --foreground ARGV` in its own session; return once it answers PING."""
    assert cfg.name is not None
    # Read here too: a bad secret file is one line from this command, and clients need the key.
    key = read_keyring(cfg.cluster_secret_file).current.public.decode() \
        if cfg.cluster_secret_file else None
    path = log_path(cfg.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        offset = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvd", "start", "--foreground", *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    with Client(cfg.connect_host, cfg.port, timeout=0.5, server_key=key) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print(_last_error(path, offset) or f"kvd: exited with {proc.returncode}",
                      file=sys.stderr)
                return proc.returncode or 1
            try:
                if _serving_pid(client, cfg) == proc.pid:
                    print(f"{cfg.name} started on tcp://{cfg.address} (pid {proc.pid}, "
                          f"data {cfg.data_dir}, log {path})"
                          + (f" (server key {key})" if key else ""))
                    return 0
            except Unreachable:
                client.reset()
                time.sleep(0.05)
    print(f"kvd: {cfg.name} did not answer within {START_TIMEOUT_S:g}s — see {path}",
          file=sys.stderr)
    return 1


def _serving_pid(client: Client, cfg: Config) -> int | None:
    """The pid of the kvd answering on the port: from INFO, or, when users exist and INFO
    needs a login, from the pid file of a node that answers at all."""
    try:
        return client.info().get("pid")
    except ServerError as exc:
        if exc.code != "NOAUTH":
            raise
    assert cfg.data_dir is not None
    try:
        return json.loads((cfg.data_dir / PID_FILE).read_text()).get("pid")
    except (OSError, ValueError):
        return None


def _last_error(path: Path, offset: int) -> str | None:
    with open(path, "rb") as f:
        f.seek(offset)
        lines = [ln.decode(errors="replace") for ln in f.read().splitlines()]
    errors = [ln for ln in lines if ln.startswith("kvd:")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def client_failure(exc: ServerError | Unreachable) -> int:
    """What an operator command (kvd user, kvd raft) prints and exits with when its request
    fails: the node's refusal (2) or no node (3), in one line."""
    if isinstance(exc, ServerError):
        print(f"kvd: {exc.code}: {exc}", file=sys.stderr)
        return 2
    print(f"kvd: {exc}", file=sys.stderr)
    return 3


def password_for(user: str | None) -> str | None:
    """A user's password: KV_PASSWORD, else asked on the terminal (never a flag: argv is
    visible to every process on the host)."""
    if user is None:
        return None
    password = os.environ.get("KV_PASSWORD")
    if password is None:
        import getpass

        password = getpass.getpass(f"password for {user}: ")
    return password


def find_pid(port: int | None, name: str | None, data_dir: Path | None,
             server_key: str | None = None, user: str | None = None
             ) -> tuple[int, str] | None:
    """(pid, name) of a running kvd, found by its data dir, name or port."""
    candidates = [data_dir] if data_dir else sorted(data_root().glob("*"))
    for folder in candidates:
        try:
            meta = json.loads((folder / PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        matches = data_dir or (name and meta["name"] == name) or (port and meta["port"] == port)
        if matches and _alive(meta["pid"]):
            return meta["pid"], meta["name"]
    if port and not name and not data_dir:
        try:
            with Client("127.0.0.1", port, timeout=2, server_key=server_key, user=user,
                        password=password_for(user)) as client:
                info = client.info()
            return int(info["pid"]), str(info["name"])
        except (Unreachable, KeyError):
            return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(port: int | None, name: str | None, data_dir: Path | None,
         server_key: str | None = None, user: str | None = None) -> int:
    try:
        found = find_pid(port, name, data_dir, server_key, user)
    except ServerError as exc:
        print(f"kvd: the node on port {port} answers {exc.code}: name it by --data-dir or "
              "--name, or log in with --user", file=sys.stderr)
        return 1
    if found is None:
        what = data_dir or name or f"port {port}"
        print(f"kvd: no running kvd found for {what} — check with: kvd status", file=sys.stderr)
        return 1
    pid, node_name = found
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"{node_name} stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"kvd: {node_name} (pid {pid}) did not stop within {STOP_TIMEOUT_S:g}s", file=sys.stderr)
    return 1


def status(host: str, port: int, as_json: bool, server_key: str | None = None,
           user: str | None = None) -> int:
    try:
        with Client(host, port, timeout=2, server_key=server_key, user=user,
                    password=password_for(user)) as client:
            info = client.info()
    except ServerError as exc:  # it answers, but will not say more to a stranger
        if as_json:
            print(json.dumps({"status": "up", "address": f"{host}:{port}", "error": str(exc)}))
        else:
            print(f"{host}:{port} up; {exc.code}: {exc} (kvd status --user NAME says more)")
        return 0
    except Unreachable as exc:
        if as_json:
            print(json.dumps({"status": "down", "address": f"{host}:{port}", "error": str(exc)}))
        else:
            print(f"kvd: {exc}", file=sys.stderr)
        return 3
    if as_json:
        print(json.dumps({"status": "up", **info}, default=str))
    else:
        print(f"{info['name']} up {info['uptime_s']}s at {host}:{port}: {info['keys']} keys, "
              f"{info['members']} member(s), fsync {info.get('fsync')}, digest {info['digest']}")
    return 0
