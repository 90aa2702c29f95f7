"""A linearizability checker: Wing & Gong's search with Lowe's memoization, split per key.

A history is a list of `Op`s, each with the client that ran it, when it was called and when
it returned (any comparable numbers: ms, or positions in an event list — see `from_events`),
its name, arguments and result. An op that never returned (`ret` None: the client crashed or
timed out) may or may not have taken effect: it can take effect at any point after its call,
or never. A sequential `Model` says what one op does to the state: `step(state, op)` returns
(whether the op's result is possible from `state`, the state after it); for an op that never
returned the result is unknown, and the model must accept it.

The history is linearizable when some order of its ops (the pending ones optional) respects
real time — an op that returned before another was called comes first — and the model
accepts every op in that order (Herlihy & Wing). Intervals are closed: an op called at the
very time another returned overlaps it.

The search (Wing & Gong 1993; Lowe 2017, "Testing for linearizability"; as in porcupine):
walk the calls and returns in time order; at a call, try to take the op now (the model must
accept it) and start over from the earliest event left; at a return whose op has not been
taken, undo the last choice. Lowe's improvement: remember each (set of ops taken, state)
reached, and never explore one twice — the state must therefore be hashable. An op that
never returned has its return after every other event; reaching one means every op that did
return has been taken, and the pending ones left simply never took effect.

P-compositionality (Horn & Kroening 2015): when a model's `part` names what an op touches (a
key, a lock), ops on different parts cannot constrain one another, and each part is checked
alone — the search is exponential in the ops that overlap, so this is what keeps it small.

On failure the verdict names the shortest failing prefix of the failing part: the history
cut at the first return after which no linearization exists (ops still running at the cut
count as never returned). Cutting is monotone for the models below — a pending op is only
ever more permissive than the op with its result — so a binary search finds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from math import inf
from typing import Any


@dataclass(frozen=True)
class Op:
    client: Hashable
    call: float
    ret: float | None  # None: no reply ever came; the op may or may not have taken effect
    name: str
    args: tuple = ()
    result: Any = None

    @property
    def pending(self) -> bool:
        return self.ret is None

    def __str__(self) -> str:
        args = ", ".join(map(repr, self.args))
        ret = "never" if self.ret is None else self.ret
        result = "?" if self.pending else repr(self.result)
        return f"[{self.call}, {ret}] {self.client}: {self.name}({args}) -> {result}"


@dataclass(frozen=True)
class Model:
    name: str
    init: Hashable
    step: Callable[[Any, Op], tuple[bool, Any]]
    part: Callable[[Op], Hashable] | None = None  # what an op touches (None: all one part)


@dataclass
class Verdict:
    ok: bool
    orders: dict[Hashable, list[Op]] = field(default_factory=dict)  # a witness per part
    part: Hashable = None  # the part that failed
    prefix: list[Op] = field(default_factory=list)  # its shortest failing prefix
    culprit: Op | None = None  # the op whose return ends that prefix
    partial: list[Op] = field(default_factory=list)  # the longest order found for the prefix

    def __bool__(self) -> bool:
        return self.ok

    @property
    def order(self) -> list[Op]:
        """The witness as one list (parts one after another: each is an order on its own)."""
        return [op for ops in self.orders.values() for op in ops]

    def explain(self) -> str:
        if self.ok:
            return "linearizable:\n" + "\n".join(f"  {op}" for op in self.order)
        lines = [f"not linearizable (part {self.part!r}); the shortest failing prefix, which "
                 f"ends as this op returns: {self.culprit}"]
        lines += [f"  {op}" for op in self.prefix]
        lines.append("the longest order the model accepts, before it is stuck:")
        lines += [f"  {op}" for op in self.partial] or ["  (none)"]
        return "\n".join(lines)


def check(history: Iterable[Op], model: Model) -> Verdict:
    """Is the history linearizable under the model? Each part on its own."""
    parts: dict[Hashable, list[Op]] = {}
    for op in history:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"returned before it was called: {op}")
        parts.setdefault(model.part(op) if model.part else None, []).append(op)
    orders = {}
    for part, ops in parts.items():
        order, _ = _search(ops, model)
        if order is None:
            prefix, culprit = _shortest_failing_prefix(ops, model)
            _, partial = _search(prefix, model)
            return Verdict(False, orders, part, prefix, culprit, partial)
        orders[part] = order
    return Verdict(True, orders)


def from_events(events: Iterable[tuple]) -> list[Op]:
    """Ops from an event list in real-time order: ("call", client, name, args) and
    ("return", client, result); an event's position is its time. A client has one call
    outstanding at a time; a call with no return is an op that never returned."""
    open_calls: dict[Hashable, tuple[int, str, tuple]] = {}
    ops: list[Op] = []
    for time, event in enumerate(events):
        kind, client = event[0], event[1]
        if kind == "call":
            if client in open_calls:
                raise ValueError(f"client {client!r} called again before its return")
            open_calls[client] = (time, event[2], tuple(event[3]))
        elif kind == "return" and client in open_calls:
            call, name, args = open_calls.pop(client)
            ops.append(Op(client, call, time, name, args, event[2]))
        else:
            raise ValueError(f"event {time} is neither a call nor a return of a call: {event}")
    ops += [Op(c, call, None, name, args) for c, (call, name, args) in open_calls.items()]
    return sorted(ops, key=lambda op: op.call)


# -- the search -------------------------------------------------------------------------------


class _Entry:
    """A call or a return in a doubly linked list; a call's `match` is its return."""

    __slots__ = ("op", "id", "is_call", "match", "prev", "next")

    def __init__(self, op: Op | None = None, id: int = -1, is_call: bool = False) -> None:
        self.op, self.id, self.is_call = op, id, is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _events(ops: list[Op]) -> list[tuple[float, int, int]]:
    """(time, 0 for a call | 1 for a return, op) sorted: at a tie the call comes first, so
    ops that touch at an instant overlap. A missing return is at infinity."""
    events = [(op.call, 0, i) for i, op in enumerate(ops)]
    events += [(inf if op.ret is None else op.ret, 1, i) for i, op in enumerate(ops)]
    return sorted(events)


def _linked(ops: list[Op]) -> _Entry:
    head = last = _Entry()
    calls: dict[int, _Entry] = {}
    for _, kind, i in _events(ops):
        entry = _Entry(ops[i], i, kind == 0)
        if kind == 0:
            calls[i] = entry
        else:
            calls[i].match = entry
        entry.prev, last.next, last = last, entry, entry
    return head


def _lift(call: _Entry) -> None:
    """Take an op's call and return out of the list (`_unlift` puts them back, in reverse)."""
    ret = call.match
    call.prev.next, call.next.prev = call.next, call.prev  # type: ignore[union-attr]
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:  # type: ignore[union-attr]
        ret.next.prev = ret.prev  # type: ignore[union-attr]


def _unlift(call: _Entry) -> None:
    ret = call.match
    ret.prev.next = ret  # type: ignore[union-attr]
    if ret.next is not None:  # type: ignore[union-attr]
        ret.next.prev = ret  # type: ignore[union-attr]
    call.prev.next, call.next.prev = call, call  # type: ignore[union-attr]


def _search(ops: list[Op], model: Model) -> tuple[list[Op] | None, list[Op]]:
    """(a linearization or None, the longest prefix of one the search reached)."""
    head = _linked(ops)
    state, taken = model.init, 0  # taken: a bit per op in the order so far
    stack: list[tuple[_Entry, Any]] = []  # (call taken, state before it)
    seen: set[tuple[int, Any]] = set()
    longest: list[Op] = []
    entry = head.next
    while entry is not None:
        if entry.is_call:
            ok, after = model.step(state, entry.op)  # type: ignore[arg-type]
            key = (taken | 1 << entry.id, after)
            if ok and key not in seen:
                seen.add(key)
                stack.append((entry, state))
                state, taken = after, key[0]
                _lift(entry)
                if len(stack) > len(longest):
                    longest = [e.op for e, _ in stack]  # type: ignore[misc]
                entry = head.next
                continue
            entry = entry.next
        elif entry.op.pending:  # type: ignore[union-attr]
            break  # every op that returned is taken; the pending ones left never happened
        elif not stack:
            return None, longest
        else:  # this op's return came before it could be taken: undo the last choice
            entry, state = stack.pop()
            taken &= ~(1 << entry.id)
            _unlift(entry)
            entry = entry.next
    return [e.op for e, _ in stack], longest  # type: ignore[misc]


def _cut(ops: list[Op], events: list[tuple[float, int, int]], end: int) -> list[Op]:
    """The history as it stood after its first `end` events: ops still running are pending."""
    returned = {i for _, kind, i in events[:end] if kind == 1}
    called = [i for _, kind, i in events[:end] if kind == 0]
    return [ops[i] if i in returned else dataclasses.replace(ops[i], ret=None)
            for i in called]


def _shortest_failing_prefix(ops: list[Op], model: Model) -> tuple[list[Op], Op]:
    events = _events(ops)
    # A prefix can only fail at a return of an op that returned: cut right after one.
    cuts = [n + 1 for n, (_, kind, i) in enumerate(events)
            if kind == 1 and not ops[i].pending]
    low, high = 0, len(cuts) - 1  # the whole history (the last cut) fails
    while low < high:
        mid = (low + high) // 2
        if _search(_cut(ops, events, cuts[mid]), model)[0] is None:
            high = mid
        else:
            low = mid + 1
    return _cut(ops, events, cuts[low]), ops[events[cuts[low] - 1][2]]


# -- models -------------------------------------------------------------------------------------


def _register_step(value: Any, op: Op) -> tuple[bool, Any]:
    """A register per key: read() -> value | None, write(v), delete(), and cas(expected, new)
    -> bool (expected None: the key must be absent)."""
    name, args = op.name, op.args[1:]
    if name == "read":
        return op.pending or op.result == value, value
    if name == "write":
        return True, args[0]
    if name == "delete":
        return True, None
    if name == "cas":
        expected, new = args
        if op.pending:
            return True, new if value == expected else value
        return bool(op.result) == (value == expected), new if op.result else value
    raise ValueError(f"the register has no op {name!r}")


# ops: read(key), write(key, value), delete(key), cas(key, expected, new)
register = Model("register with compare-and-set", None, _register_step, lambda op: op.args[0])


def _lock_step(state: tuple, op: Op) -> tuple[bool, tuple]:
    """A lock per name: lock(owner) -> fencing token | None (held by another), unlock(owner)
    -> bool (whether owner held it). State: (holder, holder's token, highest token issued).

    A lock taken again by its holder returns the same token; every new acquisition's token
    is above every token issued before. A lock that never returned may have acquired, with a
    token nobody saw: later tokens are then only held above the ones seen (lenient, so never
    a false alarm). A lease's end releases the lock: record it as a successful unlock.
    """
    holder, token, floor = state
    owner = op.args[1]
    if op.name == "lock":
        if holder is None:
            if op.pending:
                return True, (owner, None, floor)
            got = op.result
            return got is not None and got > floor, (owner, got, max(floor, got or 0))
        if holder != owner:
            return op.pending or op.result is None, state
        if op.pending or token is None:  # the holder's own token: known now if it was not
            ok = op.pending or (op.result is not None and op.result > floor)
            seen = op.result if not op.pending and ok else token
            return ok, (holder, seen, max(floor, seen or 0))
        return op.result == token, state
    if op.name == "unlock":
        released = holder is not None and holder == owner
        ok = op.pending or bool(op.result) == released
        return ok, (None, None, floor) if released else state
    raise ValueError(f"the lock has no op {op.name!r}")


# ops: lock(name, owner), unlock(name, owner)
lock = Model("lock with fencing tokens", (None, None, 0), _lock_step, lambda op: op.args[0])
