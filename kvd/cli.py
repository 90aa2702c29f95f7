"""`kvd` command line: start, stop, status, user, raft, secret (CONTRACT.md is the reference
for every flag)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kvd import __version__, config, daemon
from kvd.doors.native import BindError
from shared import keyring
from shared.errors import KvError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvd", description="The kv daemon.")
    parser.add_argument("--version", action="version", version=f"kvd {__version__}")
    sub = parser.add_subparsers(dest="action", required=True,
                                metavar="{start,stop,status,user,raft,secret,check-log,bench}")

    start = sub.add_parser("start", help="start a node (detached unless --foreground)")
    start.add_argument("--foreground", action="store_true", help="stay attached, log to stderr")
    start.add_argument("--name", help="node name, unique in the cluster (default HOST:PORT)")
    start.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--port", type=int, help="client port (default 7700)")
    start.add_argument("--gossip-port", type=int, help="gossip PUB port (default port + 1)")
    start.add_argument("--resp-port", type=int, help="Redis-protocol port (default 7379; 0 "
                       "closes it)")
    start.add_argument("--http-port", type=int, help="HTTP port (default 7780; 0 closes it)")
    start.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (chain): "
                       "the Redis and HTTP doors speak TLS only; needs --tls-key")
    start.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of "
                       "--tls-cert")
    start.add_argument("--tls-ca", type=Path, metavar="FILE", help="PEM CA: TLS clients must "
                       "present a certificate it signed")
    start.add_argument("--join", action="append", default=[], metavar="HOST:PORT",
                       help="a member's client port to join; repeatable")
    start.add_argument("--data-dir", type=Path, help="data folder (default: one per node "
                       "under the user data dir)")
    start.add_argument("--fsync", choices=config.FSYNC_POLICIES, help="log fsync policy")
    start.add_argument("--config", type=Path, help="TOML config (default kvd.toml in the "
                       "user config dir)")
    start.add_argument("--log-level", choices=config.LOG_LEVELS)
    start.add_argument("--repair", action="store_true", help="if the log is corrupt, truncate "
                       "it at the last good record (says how many records it drops)")
    start.add_argument("--insecure", action="store_true", default=None,
                       help="listen beyond loopback even with no user defined")
    start.add_argument("--cluster-secret-file", type=Path, metavar="FILE", help="encrypt the "
                       "client port and all peer traffic (CURVE), with keys derived from this "
                       "secret (kvd secret new); every node of the cluster needs the same")

    stop = sub.add_parser("stop", help="stop a detached node gracefully")
    which = stop.add_mutually_exclusive_group()
    which.add_argument("--port", type=int)
    which.add_argument("--name")
    which.add_argument("--data-dir", type=Path)
    stop.add_argument("--user", help="log in as this user to find the node by --port "
                      "(password: KV_PASSWORD or a prompt)")
    _key_flags(stop)

    status = sub.add_parser("status", help="exit 0 if the node answers, 3 if not")
    status.add_argument("--host", default="127.0.0.1")
    status.add_argument("--port", type=int, default=7700)
    status.add_argument("--json", action="store_true")
    status.add_argument("--user", help="log in as this user (password: KV_PASSWORD or a prompt)")

    users = sub.add_parser("user", help="manage users: once one exists, every door needs a "
                           "login")
    actions = users.add_subparsers(dest="user_action", required=True,
                                   metavar="{add,del,list,token}")
    add = actions.add_parser("add", help="add a user (the first must be an --admin, added "
                             "on the node's host)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the new password from stdin (else it is asked twice)")
    add.add_argument("--read", action="append", default=[], metavar="PATTERN",
                     help="may read keys matching this glob; repeatable")
    add.add_argument("--write", action="append", default=[], metavar="PATTERN",
                     help="may read and write keys matching this glob; repeatable")
    add.add_argument("--admin", action="store_true", help="every key, and the users")
    actions.add_parser("del", help="delete a user").add_argument("name")
    actions.add_parser("list", help="list the users").add_argument("--json",
                                                                   action="store_true")
    token = actions.add_parser("token", help="issue an HTTP Bearer token for a user (printed "
                               "once)")
    token.add_argument("name")
    token.add_argument("--revoke", action="store_true", help="revoke all of its tokens instead")
    for action in actions.choices.values():
        _operator_flags(action)
    _key_flags(status)

    from kvd.raftcli import add_arguments as raft_arguments  # its flags live with it

    raft_arguments(sub.add_parser("raft", help="the consensus group: status, remove a member "
                                  "gone for good, init on an upgraded cluster"), _operator_flags)

    check = sub.add_parser("check-log", help="verify a node's log; exit 1 if it is corrupt")
    check.add_argument("--data-dir", type=Path, help="the node's data folder (default: the "
                       "default node's)")
    check.add_argument("--config", type=Path)
    check.add_argument("--repair", action="store_true",
                       help="truncate a corrupt log at the last good record")

    bench = sub.add_parser("bench", help="load a running node or cluster; report throughput "
                           "and latency")
    from kvd.bench.runner import add_arguments  # the bench's flags live with the bench

    add_arguments(bench)

    secret = sub.add_parser("secret", help="make a cluster secret, or print its server key")
    what = secret.add_subparsers(dest="secret_action", required=True, metavar="{new,key}")
    new = what.add_parser("new", help="write a fresh cluster secret to FILE (mode 0600; never "
                          "overwrites a file)")
    new.add_argument("file", type=Path, metavar="FILE")
    key = what.add_parser("key", help="print the CURVE server key of a cluster secret file "
                          "(what clients pass as --server-key)")
    key.add_argument("file", type=Path, metavar="FILE")
    return parser


def _operator_flags(p: argparse.ArgumentParser) -> None:
    """Where `kvd user` and `kvd raft` send their request, and as whom."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7700)
    p.add_argument("--user", dest="login", metavar="USER",
                   help="log in as this user (password: KV_PASSWORD or a prompt)")
    _key_flags(p)


def _key_flags(p: argparse.ArgumentParser) -> None:
    """How `kvd stop` and `kvd status` reach a node that encrypts (CURVE)."""
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--server-key", metavar="KEY", help="the node's CURVE server key "
                      "(default: $KV_SERVER_KEY)")
    keys.add_argument("--cluster-secret-file", type=Path, metavar="FILE",
                      help="derive the server key from the cluster secret")


def server_key_of(args: argparse.Namespace) -> str | None:
    """The server key `kvd stop`/`status` use: --server-key, the secret's, $KV_SERVER_KEY."""
    if args.cluster_secret_file is not None:
        return config.read_keyring(args.cluster_secret_file).current.public.decode()
    given = args.server_key or os.environ.get("KV_SERVER_KEY")
    return keyring.server_key(given).decode() if given else None


START_KEYS = ("name", "bind", "port", "gossip_port", "resp_port", "http_port", "join",
              "data_dir", "fsync", "log_level", "insecure", "tls_cert", "tls_key", "tls_ca",
              "cluster_secret_file")


def main(argv: list[str] | None = None) -> int:
    argv = keyring.glued_key_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.action == "start":
            cfg = config.load(args.config, {k: getattr(args, k) for k in START_KEYS})
            if args.foreground:
                return daemon.run_foreground(cfg, args.repair)
            return daemon.start_detached(cfg, argv[argv.index("start") + 1 :])
        if args.action == "bench":
            from kvd.bench.runner import main as bench_main

            return bench_main(args)
        if args.action == "stop":
            port = args.port if (args.port or args.name or args.data_dir) else 7700
            return daemon.stop(port, args.name, args.data_dir, server_key_of(args), args.user)
        if args.action == "user":
            from kvd.usercli import run

            return run(args, server_key_of(args))
        if args.action == "raft":
            from kvd.raftcli import run as raft_run

            return raft_run(args, server_key_of(args))
        if args.action == "check-log":
            return check_log(config.load(args.config, {"data_dir": args.data_dir}), args.repair)
        if args.action == "secret":
            return secret(args.secret_action, args.file)
        return daemon.status(args.host, args.port, args.json, server_key_of(args), args.user)
    except (KvError, BindError) as exc:
        print(f"kvd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def secret(action: str, path: Path) -> int:
    """`kvd secret new FILE` / `kvd secret key FILE`: the secret itself is never printed."""
    if action == "new":
        ring = config.new_secret_file(path)
        print(f"{path}: a new cluster secret (mode 0600); its server key "
              f"{ring.current.public.decode()}")
        return 0
    print(config.read_keyring(path).current.public.decode())
    return 0


def check_log(cfg: config.Config, repair: bool) -> int:
    from kvd.log.recovery import check

    assert cfg.data_dir is not None
    lock = daemon.DataDirLock(cfg.data_dir) if repair else None  # never repair under a kvd
    try:
        code, lines = check(cfg.data_dir, repair)
    finally:
        if lock is not None:
            lock.release()
    print("\n".join(lines))
    return code
