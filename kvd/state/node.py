"""The node: one kvd's state and its write path, with no sockets and no clock of its own.

The loop hands it requests and the time; it answers with reply values and leaves behind, in
`changes`, every entry it applied this turn (for the log, the peers and WATCH). Everything here
is deterministic given its inputs, which is what lets tests drive it with a fake clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kvd import __version__
from kvd.state.access import Access
from kvd.state.context import Context, Deferred
from kvd.state.handlers import HANDLERS, OK
from kvd.state.hlc import LOGICAL_BITS, HybridClock
from kvd.state.store import LOST, SYSTEM, Entry, Store
from kvd.state.transaction import CONTROL, Transactions
from kvd.state.users import Users
from kvd.state.watch import WatchHub
from shared.commands import Call, Command, Kind, arg_kinds, lookup, parse
from shared.errors import KvError, NoPerm, TooLarge

MAX_KEY = 64 * 1024
DEFAULT_MAX_VALUE = 16 * 1024 * 1024


@dataclass(slots=True)
class Change:
    """One applied write: what it replaced is kept so a failed log append can undo it.

    `seq` is the write's number in its origin's sequence (1, 2, ... per origin node; 0 when
    not known, e.g. a snapshot record): replication uses it to find gaps.
    """

    key: bytes
    entry: Entry
    previous: Entry | None
    seq: int = 0


class Node:
    def __init__(
        self,
        name: str,
        address: str,
        clock: HybridClock | None = None,
        max_value: int = DEFAULT_MAX_VALUE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.address = address
        self.clock = clock or HybridClock()
        self.max_value = max_value  # a property: keeps the size-check floor in step
        self.store = Store()
        # Cursors unique across restarts: this run counts from its boot time (see kvd.state.watch).
        self.watches = WatchHub(first_cursor=self.clock.wall_ms() << 20)
        self.changes: list[Change] = []
        self.seq = 0  # how many local writes this node has originated (its gossip sequence)
        self.counters: Counter[str] = Counter()
        self.command_counts: Counter[str] = Counter()  # by command name (/metrics)
        self.info_sources: list[Callable[[], dict]] = []
        self.members_source: Callable[[int], list[dict]] | None = None  # set by kvd.cluster.cluster
        # Where coordination commands go (kvd.consensus sets it): a command tuple in, a
        # Deferred reply out. None: no consensus group on this node.
        self.coordinator: Callable[[tuple], Deferred] | None = None
        # OBSERVE's long polls (kvd.observers): election, AFTER, wait in ms -> a reply now or
        # a Deferred. None: no consensus group on this node.
        self.observer: Callable[[bytes, int | None, int], object] | None = None
        # RAFT REMOVE / INIT (kvd.consensus.Consensus.operate): a reply now or a Deferred.
        self.operator: Callable[[tuple], object] | None = None
        self._monotonic = monotonic
        self._started = monotonic()
        self._routes: dict[bytes, tuple[Command, Callable, int]] = {}
        self.users = Users()
        self.access = Access(self.users, monotonic)
        self.transactions = Transactions()  # MULTI ... EXEC, by client
        self.locked = False  # users exist: every request is checked (see _users_changed)
        self.hidden_changes = False  # this turn's changes include system records
        self.users.on_change.append(self._users_changed)

    @property
    def max_value(self) -> int:
        return self._max_value

    @max_value.setter
    def max_value(self, limit: int) -> None:
        self._max_value = limit
        self._size_floor = min(MAX_KEY, limit)

    # -- the write path -------------------------------------------------------------------

    def write(self, key: bytes, value: bytes | None, expires_at: int = 0) -> Entry:
        """A local write or deletion, stamped now; always wins over what the node has seen."""
        entry = Entry(value, self.clock.now(), self.name, expires_at)
        self.seq = seq = self.seq + 1
        # `apply`, inlined: this is every SET's path.
        previous = self.store.replace(key, entry)
        if previous is not LOST:
            self.changes.append(Change(key, entry, previous, seq))  # type: ignore[arg-type]
        return entry

    def apply(self, key: bytes, entry: Entry, seq: int = 0) -> bool:
        """Merge an entry (local or from a peer); record it if it won."""
        previous = self.store.replace(key, entry)
        if previous is LOST:
            return False
        if key[:4] == SYSTEM:
            self.hidden_changes = True
        self.changes.append(Change(key, entry, previous, seq))  # type: ignore[arg-type]
        return True

    def apply_all(self, items: list[tuple[int, bytes, Entry]]) -> None:
        """`apply` for a peer's stream of (seq, key, entry), in order: one loop instead of a
        call per item, since every write of every peer comes through here."""
        replace, record = self.store.replace, self.changes.append
        for seq, key, entry in items:
            previous = replace(key, entry)
            if previous is not LOST:
                record(Change(key, entry, previous, seq))  # type: ignore[arg-type]
                if key[:4] == SYSTEM:
                    self.hidden_changes = True

    def take_changes(self) -> list[Change]:
        """The turn's changes. A system record among them was flagged where it was made: by
        USER (kvd.state.usercmds, which updated the users itself) or by a peer's write
        (`apply`, `apply_all`) — a client's write path never looks."""
        changes, self.changes = self.changes, []
        if self.hidden_changes:
            self.users.observe((c.key, c.entry.value) for c in changes if c.key[:4] == SYSTEM)
        return changes

    def visible(self, changes: list[Change]) -> list[Change]:
        """The changes a watcher or a keyspace notification may see: not the system ones
        (ends the turn's flag: called once per turn, after take_changes)."""
        if not self.hidden_changes:
            return changes
        self.hidden_changes = False
        return [c for c in changes if c.key[:4] != SYSTEM]

    def reload_users(self) -> None:
        """Read the users from the store (after the log's replay at start-up)."""
        self.users.observe((k, e.value) for k, e in self.store.items() if k[:4] == SYSTEM)

    def _users_changed(self) -> None:
        """Once a user exists, every request goes through the access check first: the open
        node's fast paths are swapped out for checked ones, so an open node pays nothing."""
        self.locked = len(self.users) > 0
        if self.locked:
            self.execute = self._execute_checked  # type: ignore[method-assign]
            self.execute_batch = self._execute_batch_checked  # type: ignore[method-assign]
        else:
            self.__dict__.pop("execute", None)
            self.__dict__.pop("execute_batch", None)

    def undo(self, changes: list[Change]) -> None:
        """Roll back changes the log refused, newest first, so memory matches the disk."""
        self.seq -= sum(1 for c in changes if c.seq and c.entry.origin == self.name)
        for change in reversed(changes):
            self.store.remove(change.key)
            if change.previous is not None:
                self.store.merge(change.key, change.previous)

    # -- requests -------------------------------------------------------------------------

    def execute(self, argv: list[bytes], ctx: Context) -> object:
        """Run one command; returns the reply value, or the KvError to send back."""
        if self.transactions.open and ctx.client in self.transactions.open:
            queued = self._queue(argv, ctx)
            if queued is not None:
                return queued
        # A plain SET or GET (the commonest commands) skips routing, parsing and the handler
        # call; it is exactly what they would do (tests/test_hotpath.py holds the two equal).
        n, floor = len(argv), self._size_floor
        if n == 3 and argv[0] == b"SET" and len(argv[1]) <= floor and len(argv[2]) <= floor \
                and argv[1][:4] != SYSTEM:
            self.counters["commands"] += 1
            self.command_counts["SET"] += 1
            self.write(argv[1], argv[2])
            return OK
        # No system-key check for GET: an open node has no user records to read, and a
        # locked one checked every argument before it came here (_execute_checked).
        if n == 2 and argv[0] == b"GET" and len(argv[1]) <= floor:
            self.counters["commands"] += 1
            self.command_counts["GET"] += 1
            entry = self.store.get(argv[1], ctx.now)
            return None if entry is None else entry.value
        try:
            route = self._routes.get(argv[0])
            if route is None:
                route = self._route(argv[0])
            command, handler, plain = route
            # Every argument within both limits (the common case) needs no per-kind check.
            if max(map(len, argv)) > self._size_floor:
                self._check_sizes(command, argv)
            if any(a[:4] == SYSTEM for a in argv):
                _refuse_system(command, argv)
            if len(argv) - 1 == plain:  # all byte arguments, no options: nothing to parse
                call = Call(command, tuple(argv[1:]), {})
            else:
                call = parse(command, argv[1:])
            self.counters["commands"] += 1
            self.command_counts[command.name] += 1
            return handler(self, call, ctx)
        except KvError as exc:
            self.counters["errors"] += 1
            self.counters[f"error_{exc.code}"] += 1
            return exc

    def execute_batch(self, requests: list[list], ctx: Context,
                      clients: list[bytes] | None = None) -> tuple[list, list[int]]:
        """A BATCH's [request id, argv] pairs, in order: returns their (request id, reply
        value) pairs and the positions of the requests that wrote (a failed log commit turns
        exactly those replies into errors). `clients`, when the requests came from several,
        says who sent each (WATCH needs to know); otherwise it is `ctx.client`.

        Plain `SET key value` and `GET key` (upper case, no options, within the size floor)
        are done right here in one loop: the same entries, stamps, sequence numbers, changes
        and counters as `execute` would leave (tests/test_hotpath.py holds the two paths
        equal), without a route lookup, a parsed Call, a handler call and a clock call per
        request, which were half the cost of a batched SET. Everything else goes through
        `execute`.
        """
        if self.transactions.open:  # some client's commands are queued, not run: see execute
            return self._execute_each(requests, ctx, clients, self.execute)
        replies: list[tuple[int, object]] = []
        wrote: list[int] = []
        store, changes, name, clock = self.store, self.changes, self.name, self.clock
        replace, get, floor, now = store.replace, store.get, self._size_floor, ctx.now
        # One wall-clock read for the batch; each write's stamp is still greater than every
        # stamp before it, as HybridClock.now() would make it.
        wall = clock.wall_ms() << LOGICAL_BITS
        last, seq, sets, gets = clock.last, self.seq, 0, 0
        for rid, argv in requests:
            head = argv[0]
            if head == b"SET" and len(argv) == 3 and len(argv[1]) <= floor \
                    and len(argv[2]) <= floor and argv[1][:4] != SYSTEM:
                last = last + 1 if last >= wall else wall
                seq += 1
                key = argv[1]
                entry = Entry(argv[2], last, name, 0)
                previous = replace(key, entry)
                if previous is not LOST:
                    wrote.append(len(replies))
                    changes.append(Change(key, entry, previous, seq))  # type: ignore[arg-type]
                replies.append((rid, OK))
                sets += 1
            elif head == b"GET" and len(argv) == 2 and len(argv[1]) <= floor:
                entry = get(argv[1], now)
                replies.append((rid, None if entry is None else entry.value))
                gets += 1
            else:
                clock.last, self.seq = last, seq
                before = len(changes)
                if clients is not None:
                    ctx.client = clients[len(replies)]
                ctx.request_id = rid
                replies.append((rid, self.execute(argv, ctx)))
                if len(changes) != before:
                    wrote.append(len(replies) - 1)
                last, seq = clock.last, self.seq
        clock.last, self.seq = last, seq
        if sets or gets:
            self.counters["commands"] += sets + gets
            counts = self.command_counts
            counts["SET"] += sets
            counts["GET"] += gets
        return replies, wrote

    def _execute_checked(self, argv: list[bytes], ctx: Context) -> object:
        """`execute` once users exist: the access check (kvd.state.access), then the command."""
        try:
            route = self._routes.get(argv[0])
            if route is None:
                route = self._route(argv[0])
            command = route[0]
            slots = command.key_slots(len(argv))
            for i in slots:
                if argv[i][:4] == SYSTEM:
                    _refuse_system(command, argv)
            if command.access != "user":  # USER checks its caller itself (kvd.state.usercmds)
                ctx.user = self.access.check(ctx.user, command, argv, slots)
            elif ctx.user is not None:
                ctx.user = self.users.get(ctx.user.name)
        except KvError as exc:
            self.counters["errors"] += 1
            self.counters[f"error_{exc.code}"] += 1
            if self.transactions.open:  # refused inside MULTI: EXEC runs nothing
                self.transactions.spoil(ctx.client, exc)
            return exc
        return Node.execute(self, argv, ctx)

    def _execute_batch_checked(self, requests: list[list], ctx: Context,
                               clients: list[bytes] | None = None) -> tuple[list, list[int]]:
        """`execute_batch` once users exist: each request checked, as the same `ctx.user`."""
        return self._execute_each(requests, ctx, clients, self._execute_checked)

    def _execute_each(self, requests: list[list], ctx: Context, clients: list[bytes] | None,
                      run: Callable[[list[bytes], Context], object]) -> tuple[list, list[int]]:
        """`execute_batch` one request at a time, each through `run`."""
        replies: list[tuple[int, object]] = []
        wrote: list[int] = []
        for rid, argv in requests:
            if clients is not None:
                ctx.client = clients[len(replies)]
            ctx.request_id = rid
            before = len(self.changes)
            replies.append((rid, run(argv, ctx)))
            if len(self.changes) != before:
                wrote.append(len(replies) - 1)
        return replies, wrote

    def _queue(self, argv: list[bytes], ctx: Context) -> object:
        """Inside MULTI: check the command as running it would, and queue it (kvd.state.
        transaction); None for MULTI, EXEC and DISCARD, which run."""
        try:
            route = self._routes.get(argv[0])
            if route is None:
                route = self._route(argv[0])
            command = route[0]
            if command.name in CONTROL:
                return None
            if max(map(len, argv)) > self._size_floor:
                self._check_sizes(command, argv)
            if any(a[:4] == SYSTEM for a in argv):
                _refuse_system(command, argv)
            parse(command, argv[1:])
            return self.transactions.queue(ctx.client, argv, command.name)
        except KvError as exc:
            self.transactions.spoil(ctx.client, exc)
            self.counters["errors"] += 1
            self.counters[f"error_{exc.code}"] += 1
            return exc

    def _route(self, raw: bytes) -> tuple[Command, Callable, int]:
        """What a command name resolves to, cached per raw spelling (hot path: no lookups)."""
        command = lookup(raw)  # raises UnknownCommand: unknown names are not cached
        plain = -1
        if not command.repeat and all(a.kind is not Kind.INTEGER for a in command.args):
            plain = len(command.args)
        route = (command, HANDLERS[command.name], plain)
        self._routes[raw] = route
        return route

    def _check_sizes(self, command: Command, argv: list[bytes]) -> None:
        kinds = arg_kinds(command, len(argv) - 1)
        for kind, arg in zip(kinds, argv[1:], strict=False):
            if kind is Kind.VALUE and len(arg) > self.max_value:
                raise TooLarge(
                    f"value of {len(arg)} bytes is over the limit of {self.max_value} "
                    "(config key max_value_size)"
                )
            if kind is not Kind.VALUE and len(arg) > MAX_KEY:
                raise TooLarge(f"argument of {len(arg)} bytes is over the {MAX_KEY}-byte limit")

    # -- introspection ---------------------------------------------------------------------

    def version_of(self, key: bytes) -> tuple | None:
        """What identifies the key's current state (a deletion or an expired value included):
        it changes with every write that wins, local or replicated. Redis's WATCH reads it."""
        entry = self.store.lookup(key)
        return None if entry is None else (entry.stamp, entry.origin, entry.expires_at)

    def live_items(self, prefix: bytes, now: int) -> list[tuple[bytes, Entry]]:
        """Every live key under `prefix` with its entry (a full pass: a stream's reset)."""
        return [(k, e) for k, e in self.store.items()
                if k.startswith(prefix) and e.live(now) and k[:4] != SYSTEM]

    def expiring(self, now: int) -> int:
        """Live keys with an expiry (a full pass: for INFO, not for every request)."""
        return sum(1 for _, e in self.store.items() if e.expires_at and e.live(now))

    def uptime_s(self) -> int:
        return int(self._monotonic() - self._started)

    def live_keys(self) -> int:
        """Live keys a user can have: the store's count less the system records."""
        return self.store.live_count - len(self.users)

    def info(self, now: int) -> dict:
        self.store.expire_due(now)
        info = {
            "name": self.name,
            "version": __version__,
            "address": self.address,
            "uptime_s": self.uptime_s(),
            "keys": self.live_keys(),
            "tombstones": self.store.tombstones,
            "digest": f"{self.store.digest:016x}",
            "members": 1,
            "watchers": len(self.watches),
            "commands_processed": self.counters["commands"],
            "errors": self.counters["errors"],
        }
        info.update(self.access.info())
        for source in self.info_sources:
            info.update(source())
        return info


def _refuse_system(command: Command, argv: list[bytes]) -> None:
    """Keys in the system namespace (the users) are out of reach of every command."""
    for kind, arg in zip(arg_kinds(command, len(argv) - 1), argv[1:], strict=False):
        if kind is Kind.KEY and arg[:4] == SYSTEM:
            raise NoPerm("keys starting with \\x00kv\\x00 are kv's own records — pick "
                         "another key",
                         redis="NOPERM this user has no permissions to access one of the keys "
                               "used as arguments")
