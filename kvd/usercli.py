"""`kvd user add|del|list|token`: managing users through a running node.

Every change is the USER command (kvd.state.usercmds), sent over the native protocol; it
replicates to every node. Passwords never travel on a command line: the new user's comes from
stdin (`--password-stdin`) or a prompt, the caller's own (`--user`) from KV_PASSWORD or a
prompt. Exit codes follow kvsh: 0 done, 1 no such user, 2 refused, 3 node unreachable.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from kvd.daemon import client_failure, password_for
from shared.client import Client
from shared.errors import ServerError, Unreachable


def run(args: argparse.Namespace, server_key: str | None = None) -> int:
    try:
        argv = _command(args)
    except ValueError as exc:
        print(f"kvd: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(args.host, args.port, server_key=server_key, user=args.login,
                    password=password_for(args.login)) as client:
            reply = client.call(*argv)
    except (ServerError, Unreachable) as exc:
        return client_failure(exc)
    return _show(args, reply)


def _command(args: argparse.Namespace) -> list[str | bytes]:
    action = args.user_action
    if action == "add":
        argv: list[str | bytes] = ["USER", "ADD", args.name, _new_password(args)]
        for pattern in args.read:
            argv += ["READ", pattern]
        for pattern in args.write:
            argv += ["WRITE", pattern]
        return [*argv, "ADMIN"] if args.admin else argv
    if action == "del":
        return ["USER", "DEL", args.name]
    if action == "list":
        return ["USER", "LIST"]
    return ["USER", "TOKEN", args.name, *(["REVOKE"] if args.revoke else [])]


def _new_password(args: argparse.Namespace) -> bytes:
    if args.password_stdin:
        password = sys.stdin.buffer.readline().rstrip(b"\r\n")
    else:
        first = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passwords differ — nothing was changed")
        password = first.encode()
    if not password:
        raise ValueError("the password is empty — give one (on stdin with --password-stdin)")
    return password


def _show(args: argparse.Namespace, reply: object) -> int:
    action = args.user_action
    if action == "add":
        print(f"user {args.name} added")
    elif action == "del":
        if not reply:
            print(f"kvd: no user {args.name}", file=sys.stderr)
            return 1
        print(f"user {args.name} deleted")
    elif action == "token":
        if args.revoke:
            print(f"{reply} token(s) of {args.name} revoked")
        else:
            print(reply.decode() if isinstance(reply, bytes) else reply)
    elif args.json:
        print(json.dumps([_text(u) for u in reply]))  # type: ignore[union-attr]
    else:
        for user in reply:  # type: ignore[union-attr]
            u = _text(user)
            what = "admin" if u["admin"] else (
                f"read {','.join(u['read']) or '-'} write {','.join(u['write']) or '-'}")
            print(f"{u['name']}\t{what}\t{u['tokens']} token(s)")
    return 0


def _text(user: dict) -> dict:
    def plain(v: object) -> object:
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {(k.decode() if isinstance(k, bytes) else k): plain(v) for k, v in user.items()}
