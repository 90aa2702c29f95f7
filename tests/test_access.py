"""Users and permissions, sans-IO: the node's access check, the USER command, back-off with a
fake clock, the hidden system namespace, and users replicating in the simulated cluster."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.state import users as users_mod
from kvd.state.access import (
    BACKOFF_MAX_S,
    BACKOFF_S,
    FREE_FAILURES,
    Access,
    host_of,
    is_loopback,
)
from kvd.state.context import Context
from kvd.state.hlc import HybridClock
from kvd.state.node import Node
from kvd.state.users import SYSTEM, USERS, User, Users, check_password, hash_password
from shared.errors import KvError, NoAuth, NoPerm, WrongPass
from tests.sim import SimNet


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests hash many passwords; the cost parameter is not what they test."""
    monkeypatch.setattr(users_mod, "SCRYPT_N", 1 << 4)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000
        self.s = 100.0

    def __call__(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node(clock: Clock) -> Node:
    return Node("n1", "127.0.0.1:1", HybridClock(clock), monotonic=clock.monotonic)


def run(node: Node, clock: Clock, *argv: bytes | str, user: User | None = None,
        source: str = "127.0.0.1:5000") -> object:
    ctx = Context(now=clock.ms, client=b"c", request_id=1)
    ctx.user, ctx.source = user, source
    reply = node.execute([a if isinstance(a, bytes) else a.encode() for a in argv], ctx)
    node.take_changes()
    return reply


def code(value: object) -> str:
    assert isinstance(value, KvError), value
    return value.code


def locked(node: Node, clock: Clock) -> User:
    """The node with an admin `root` and two users: `app` (write app:*, read pub:*) and
    `reader` (read *); returns root."""
    assert run(node, clock, "USER", "ADD", "root", "rootpw", "ADMIN") == "OK"
    root = node.access.login(b"root", b"rootpw", "127.0.0.1")
    assert run(node, clock, "USER", "ADD", "app", "apppw", "WRITE", "app:*", "READ", "pub:*",
               user=root) == "OK"
    assert run(node, clock, "USER", "ADD", "reader", "readpw", "READ", "*", user=root) == "OK"
    return root


# -- passwords and tokens --------------------------------------------------------------------


def test_passwords_are_stored_as_salted_hashes() -> None:
    one, two = hash_password(b"secret"), hash_password(b"secret")
    assert one != two and "secret" not in one  # salted
    assert check_password(b"secret", one) and not check_password(b"Secret", one)
    assert not check_password(b"secret", "garbage") and not check_password(b"x", "a$b$c$d$e$f")


def test_a_user_never_shows_its_hash_or_tokens() -> None:
    user = User(b"bob", hash_password(b"pw"), tokens=("deadbeef",))
    assert "scrypt" not in repr(user) and "deadbeef" not in repr(user)
    assert "scrypt" not in str(user.describe())


def test_records_round_trip_and_garbage_is_no_user() -> None:
    user = User(b"bob", hash_password(b"pw"), (b"a*",), (b"b*",), False, ("t",))
    again = User.decode(b"bob", user.encode())
    assert again is not None and again.describe() == user.describe()
    assert User.decode(b"bob", b"\xc1garbage") is None
    assert User.decode(b"bob", b"\x80") is None  # an empty map: fields missing


def test_sources_are_hosts_and_loopback_is_recognised() -> None:
    assert host_of("10.0.0.1:5555") == "10.0.0.1" and host_of("[::1]:5") == "::1"
    assert is_loopback("127.0.0.1:1") and is_loopback("::1") and is_loopback("[::1]:80")
    assert not is_loopback("10.0.0.1:1") and not is_loopback("") and not is_loopback("?")


# -- the first user ---------------------------------------------------------------------------


def test_an_open_node_needs_no_login(node: Node, clock: Clock) -> None:
    assert not node.locked
    assert run(node, clock, "SET", "k", "v") == "OK"
    assert code(run(node, clock, "AUTH", "x", "y")) == "USER"  # nothing to log in to


def test_the_first_user_is_an_admin_added_from_loopback(node: Node, clock: Clock) -> None:
    assert code(run(node, clock, "USER", "ADD", "root", "pw")) == "USER"
    assert code(run(node, clock, "USER", "ADD", "root", "pw", "ADMIN",
                    source="10.1.2.3:4000")) == "NOPERM"
    assert not node.locked
    assert run(node, clock, "USER", "ADD", "root", "pw", "ADMIN") == "OK"
    assert node.locked
    assert code(run(node, clock, "GET", "k")) == "NOAUTH"
    assert code(run(node, clock, "USER", "ADD", "two", "pw", "ADMIN")) == "NOAUTH"


def test_the_open_fast_paths_are_swapped_out_once_locked(node: Node, clock: Clock) -> None:
    locked(node, clock)
    ctx = Context(now=clock.ms)
    replies, _ = node.execute_batch([[1, [b"SET", b"k", b"v"]], [2, [b"GET", b"k"]]], ctx)
    assert [code(v) for _, v in replies] == ["NOAUTH", "NOAUTH"]


# -- permissions ------------------------------------------------------------------------------


def test_permissions_by_pattern_and_class(node: Node, clock: Clock) -> None:
    root = locked(node, clock)
    app = node.access.login(b"app", b"apppw", "127.0.0.1")
    reader = node.access.login(b"reader", b"readpw", "127.0.0.1")
    assert run(node, clock, "SET", "app:1", "a", user=app) == "OK"
    assert run(node, clock, "SET", "other:x", "o", user=root) == "OK"
    assert run(node, clock, "GET", "app:1", user=app) == b"a"
    assert code(run(node, clock, "GET", "other:x", user=app)) == "NOPERM"
    assert code(run(node, clock, "SET", "pub:1", "p", user=app)) == "NOPERM"  # read only there
    assert code(run(node, clock, "MSET", "app:2", "x", "other:y", "y", user=app)) == "NOPERM"
    assert code(run(node, clock, "RENAME", "app:1", "other:z", user=app)) == "NOPERM"
    assert run(node, clock, "GET", "other:x", user=reader) == b"o"
    assert code(run(node, clock, "SET", "other:x", "r", user=reader)) == "NOPERM"
    assert code(run(node, clock, "DEL", "other:x", user=reader)) == "NOPERM"
    assert code(run(node, clock, "FLUSHDB", user=reader)) == "NOPERM"
    assert run(node, clock, "PING", user=app) == "PONG"
    # Listings are cut to what the user may read.
    assert run(node, clock, "KEYS", "*", user=app) == [b"app:1"]
    assert run(node, clock, "SCAN", "0", "COUNT", "1000", user=app)[1] == [b"app:1"]
    assert sorted(run(node, clock, "KEYS", "*", user=reader)) == [b"app:1", b"other:x"]
    assert run(node, clock, "RANDOMKEY", user=app) == b"app:1"
    # WATCH needs every key under the prefix.
    assert code(run(node, clock, "WATCH", "ap", user=app)) == "NOPERM"
    assert code(run(node, clock, "WATCH", "", user=app)) == "NOPERM"
    assert run(node, clock, "WATCH", "app:", user=app)["watching"] == b"app:"
    assert run(node, clock, "WATCH", "", user=reader)["watching"] == b""


def test_only_an_admin_manages_users_but_anyone_takes_their_own_token(
        node: Node, clock: Clock) -> None:
    root = locked(node, clock)
    app = node.access.login(b"app", b"apppw", "127.0.0.1")
    assert code(run(node, clock, "USER", "ADD", "x", "pw", "ADMIN", user=app)) == "NOPERM"
    assert code(run(node, clock, "USER", "DEL", "reader", user=app)) == "NOPERM"
    assert code(run(node, clock, "USER", "LIST", user=app)) == "NOPERM"
    assert code(run(node, clock, "USER", "TOKEN", "reader", user=app)) == "NOPERM"
    token = run(node, clock, "USER", "TOKEN", "app", user=app)
    assert isinstance(token, bytes) and node.access.bearer(token, "h").name == b"app"
    names = [u["name"] for u in run(node, clock, "USER", "LIST", user=root)]
    assert names == [b"app", b"reader", b"root"]
    assert run(node, clock, "USER", "TOKEN", "app", "REVOKE", user=root) == 1
    with pytest.raises(WrongPass):
        node.access.bearer(token, "h2")
    assert code(run(node, clock, "USER", "ADD", "app", "pw", user=root)) == "USER"  # exists
    assert code(run(node, clock, "USER", "ADD", "bad:name", "pw", user=root)) == "USER"
    assert code(run(node, clock, "USER", "FROB", user=root)) == "SYNTAX"


def test_the_last_admin_cannot_be_deleted(node: Node, clock: Clock) -> None:
    root = locked(node, clock)
    assert code(run(node, clock, "USER", "DEL", "root", user=root)) == "USER"
    assert run(node, clock, "USER", "DEL", "app", user=root) == 1
    assert run(node, clock, "USER", "DEL", "app", user=root) == 0
    with pytest.raises(WrongPass):
        node.access.login(b"app", b"apppw", "10.9.9.9")


def test_a_deleted_users_session_loses_access(node: Node, clock: Clock) -> None:
    """Doors keep the User they logged in with; the check reads the current record."""
    root = locked(node, clock)
    app = node.access.login(b"app", b"apppw", "127.0.0.1")
    run(node, clock, "USER", "DEL", "app", user=root)
    assert code(run(node, clock, "GET", "app:1", user=app)) == "NOAUTH"


# -- back-off ---------------------------------------------------------------------------------


def test_failed_logins_back_off_exponentially_per_host(clock: Clock) -> None:
    users = Users()
    users.observe([(USERS + b"u", User(b"u", hash_password(b"pw")).encode())])
    access = Access(users, clock.monotonic)
    for _ in range(FREE_FAILURES):  # a typo or two cost nothing
        with pytest.raises(WrongPass, match="wrong"):
            access.login(b"u", b"bad", "10.0.0.1:1")
    with pytest.raises(WrongPass, match="wrong"):
        access.login(b"u", b"bad", "10.0.0.1:1")
    # At once again, from another port of the same host: refused without a check.
    with pytest.raises(WrongPass, match="wait"):
        access.login(b"u", b"pw", "10.0.0.1:2")
    assert access.login(b"u", b"pw", "10.0.0.2:1").name == b"u"  # another host is not slowed
    waits = []
    for _ in range(12):
        clock.s += BACKOFF_MAX_S + 1  # long enough for any wait
        with pytest.raises(WrongPass):
            access.login(b"u", b"bad", "10.0.0.1:1")
        waits.append(access._failures["10.0.0.1"][1] - clock.s)
    assert waits[0] == pytest.approx(BACKOFF_S * 2) and waits[1] == pytest.approx(BACKOFF_S * 4)
    assert max(waits) == BACKOFF_MAX_S and waits == sorted(waits)
    clock.s += BACKOFF_MAX_S + 1
    assert access.login(b"u", b"pw", "10.0.0.1:1").name == b"u"  # success clears the record
    assert "10.0.0.1" not in access._failures
    assert access.info()["auth_failures"] == FREE_FAILURES + 13
    assert access.info()["auth_throttled"] == 1


def test_guesses_per_second_stay_bounded(clock: Clock) -> None:
    """A client hammering wrong passwords gets at most a few checked in each second."""
    users = Users()
    users.observe([(USERS + b"u", User(b"u", hash_password(b"pw")).encode())])
    access = Access(users, clock.monotonic)
    for _ in range(10_000):  # 10 000 attempts over 100 (fake) seconds
        clock.s += 0.01
        with pytest.raises(WrongPass):
            access.login(b"u", b"guess", "10.0.0.7:1")
    assert access.counters["failures"] < 30
    assert access.counters["throttled"] > 9_900


# -- the system namespace ---------------------------------------------------------------------


def test_the_users_are_hidden_from_every_command(node: Node, clock: Clock) -> None:
    root = locked(node, clock)
    run(node, clock, "SET", "k", "v", user=root)
    assert run(node, clock, "KEYS", "*", user=root) == [b"k"]
    assert run(node, clock, "SCAN", "0", "COUNT", "5000", user=root)[1] == [b"k"]
    assert run(node, clock, "DBSIZE", user=root) == 1
    assert node.info(clock.ms)["keys"] == 1
    for _ in range(20):
        assert run(node, clock, "RANDOMKEY", user=root) == b"k"
    hidden = USERS + b"root"
    assert code(run(node, clock, "GET", hidden, user=root)) == "NOPERM"
    assert code(run(node, clock, "SET", hidden, "x", user=root)) == "NOPERM"
    assert code(run(node, clock, "DEL", hidden, user=root)) == "NOPERM"
    assert code(run(node, clock, "WATCH", SYSTEM, user=root)) == "NOPERM"
    assert run(node, clock, "FLUSHDB", user=root) == "OK"
    assert node.locked and len(node.users) == 3  # FLUSHDB leaves the users


def test_a_system_key_is_refused_on_an_open_node_too(node: Node, clock: Clock) -> None:
    forged = User(b"evil", hash_password(b"pw"), admin=True).encode()
    assert code(run(node, clock, "SET", USERS + b"evil", forged)) == "NOPERM"
    assert code(run(node, clock, "MSET", "a", "1", USERS + b"evil", forged)) == "NOPERM"
    ctx = Context(now=clock.ms)
    replies, _ = node.execute_batch([[1, [b"SET", USERS + b"evil", forged]]], ctx)
    assert code(replies[0][1]) == "NOPERM"
    node.take_changes()
    assert not node.locked and len(node.users) == 0


def test_watchers_never_see_user_records(node: Node, clock: Clock) -> None:
    run(node, clock, "SET", "a", "1")
    assert run(node, clock, "USER", "ADD", "root", "pw", "ADMIN") == "OK"
    changes = node.changes or []
    assert not changes  # `run` took them; do it by hand to look
    node.write(b"b", b"2")
    node.write(USERS + b"x", User(b"x", "h").encode())
    taken = node.take_changes()
    assert [c.key for c in node.visible(taken)] == [b"b"]
    assert b"x" in node.users.by_name


# -- the cluster ------------------------------------------------------------------------------


def test_users_replicate_and_a_deletion_revokes_everywhere() -> None:
    net = SimNet(seed=3).form("a", "b", "c")
    assert net.command("a", b"USER", b"ADD", b"root", b"pw", b"ADMIN") == "OK"
    assert net.run_until(lambda: all(n.node.locked for n in net.live()), 10_000)
    root = net.nodes["c"].node.access.login(b"root", b"pw", "127.0.0.1")
    assert net.command("c", b"USER", b"ADD", b"app", b"pw", b"WRITE", b"app:*",
                       user=root) == "OK"
    assert net.run_until(lambda: all(n.node.users.get(b"app") for n in net.live()), 10_000)
    app_b = net.nodes["b"].node.access.login(b"app", b"pw", "127.0.0.1")
    assert net.command("b", b"SET", b"app:1", b"x", user=app_b) == "OK"
    assert net.command("a", b"USER", b"DEL", b"app", user=root) == 1
    assert net.run_until(lambda: net.nodes["b"].node.users.get(b"app") is None, 10_000)
    assert code(net.command("b", b"GET", b"app:1", user=app_b)) == "NOAUTH"
    assert net.converged()


# -- hostile input ----------------------------------------------------------------------------

words = st.sampled_from([b"USER", b"ADD", b"DEL", b"LIST", b"TOKEN", b"REVOKE", b"READ",
                         b"WRITE", b"ADMIN", b"AUTH", b"root", b"*", b"", b"\x00kv\x00"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(words | st.binary(max_size=12), min_size=1, max_size=8),
                max_size=12))
def test_user_and_auth_commands_never_break_the_node(argvs: list[list[bytes]]) -> None:
    clock = Clock()
    node = Node("n1", "127.0.0.1:1", HybridClock(clock), monotonic=clock.monotonic)
    for argv in argvs:
        for user in (None, User(b"u", "x", read=(b"*",))):
            ctx = Context(now=clock.ms)
            ctx.user, ctx.source = user, "127.0.0.1"
            reply = node.execute(argv, ctx)
            assert not isinstance(reply, Exception) or isinstance(reply, KvError)
            node.take_changes()
    assert node.locked == (len(node.users) > 0)
    if node.locked:
        assert node.users.admins() >= 1  # never locked out of user management
    assert run(node, clock, "PING", user=User(b"u", "x")) == "PONG" or node.locked is False


def test_no_auth_and_no_perm_errors_say_what_to_do() -> None:
    assert "kvsh --user" in str(NoAuth("authentication required — log in first (kvsh --user "))
    assert NoPerm("x").code == "NOPERM" and WrongPass("x").redis.startswith("WRONGPASS")


def test_a_peers_user_record_is_observed_and_hidden(node: Node, clock: Clock) -> None:
    """The replica path: a record arriving from a peer updates the users and is cut from what
    watchers and notifications see, in the same turn."""
    from kvd.state.store import Entry

    record = User(b"peer-made", hash_password(b"pw"), admin=True).encode()
    node.apply_all([(1, b"plain", Entry(b"v", 5, "other")),
                    (2, USERS + b"peer-made", Entry(record, 6, "other"))])
    taken = node.take_changes()
    assert node.locked and node.users.get(b"peer-made") is not None
    assert [c.key for c in node.visible(taken)] == [b"plain"]
    node.apply(b"again", Entry(b"w", 7, "other"))
    assert node.visible(node.take_changes())[0].key == b"again"  # the flag ended with the turn


def test_localhost_is_loopback_without_a_lookup() -> None:
    assert is_loopback("localhost") and is_loopback("LOCALHOST:7700")
    assert not is_loopback("example.com")
