"""`kvd raft status|remove|init`: the consensus group, for operators, through a running node.

`status` reads the node's INFO (its raft_* fields); `remove NAME` and `init` are the RAFT
command (kvd.consensus), which needs admin permission once users exist. As with `kvd user`,
the caller's password comes from KV_PASSWORD or a prompt, never the command line. Exit codes
follow kvsh: 0 done, 2 refused (an error reply), 3 node unreachable or no answer in time.

`init` first asks every member (their client ports, from MEMBERS) whether it has a group: it
founds one only when none has, and refuses while a member cannot be asked, unless --force
(two groups in one cluster would each elect a leader — the one thing to avoid).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from kvd.daemon import client_failure, password_for
from shared.client import Client
from shared.errors import KvError, ServerError, Unreachable

FIELDS = ("raft_role", "raft_term", "raft_leader", "raft_voters", "raft_learners",
          "raft_commit", "raft_applied", "raft_error")
REMOVE_TIMEOUT_S = 10.0  # the node answers within 5 s (TRYAGAIN when it could not commit)
ASK_TIMEOUT_S = 3.0


def add_arguments(raft: argparse.ArgumentParser,
                  operator_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    actions = raft.add_subparsers(dest="raft_action", required=True,
                                  metavar="{status,remove,init}")
    status = actions.add_parser("status", help="role, term, leader, voters and learners")
    status.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", help="remove a member that is gone for good "
                                "(dead, never coming back) from the consensus group")
    remove.add_argument("name")
    init = actions.add_parser("init", help="found the consensus group on this node, for a "
                              "cluster upgraded from a version without one")
    init.add_argument("--force", action="store_true", help="found it even if some member "
                      "cannot be asked whether it has a group")
    for action in actions.choices.values():
        operator_flags(action)


def run(args: argparse.Namespace, server_key: str | None = None) -> int:
    password = password_for(args.login)
    try:
        with Client(args.host, args.port, REMOVE_TIMEOUT_S, server_key, args.login,
                    password) as client:
            if args.raft_action == "status":
                return _status(client.info(), args.json)
            if args.raft_action == "remove":
                reply = client.call("RAFT", "REMOVE", args.name)
                print(f"{args.name} removed; voters {','.join(_texts(reply['voters']))}"
                      f"{_learners(reply)}")
                return 0
            refusal = _groups_elsewhere(client)
            if refusal and not args.force:
                print(f"kvd: {refusal}", file=sys.stderr)
                return 2
            founded = client.call("RAFT", "INIT")["founded"]
            print(f"founded the consensus group on {_text(founded)}; its leader adds the "
                  "other members one at a time (kvd raft status)")
            return 0
    except (ServerError, Unreachable) as exc:
        return client_failure(exc)


def _status(info: dict, as_json: bool) -> int:
    shown = {k.removeprefix("raft_"): _text(info.get(k, "")) for k in FIELDS}
    if as_json:
        print(json.dumps(shown))
        return 0
    for key, value in shown.items():
        if key != "error" or value:
            print(f"{key}: {value}")
    return 0


def _groups_elsewhere(client: Client) -> str | None:
    """Why founding a group here is unsafe (a member has one, or cannot be asked), or None."""
    unsure = []
    for member in client.members():
        name, address = _text(member["name"]), _text(member["address"])
        if member.get("status") == "left":
            continue
        host, _, port = address.rpartition(":")
        try:
            with client.clone(host, int(port), timeout=ASK_TIMEOUT_S) as other:
                info = other.info()
        except (KvError, ValueError) as exc:
            unsure.append(f"{name} ({exc})")
            continue
        if info.get("raft_voters"):
            return f"{name} already has a consensus group (voters {_text(info['raft_voters'])})" \
                   " — nothing to init: its leader adds the other members"
    if unsure:
        return f"cannot ask {', '.join(unsure)} whether it has a consensus group — start it, " \
               "or pass --force if it is gone for good"
    return None


def _learners(reply: dict) -> str:
    learners = _texts(reply.get("learners", []))
    return f", learners {','.join(learners)}" if learners else ""


def _texts(values: list) -> list[str]:
    return [_text(v) for v in values]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
