"""Users and permissions through every door, on real nodes: kvd user, kvsh and the Python
client (native), redis-py and redis-cli (RESP), curl (HTTP); users replicate to a second node;
protected mode; brute force is slowed; hostile authentication input never costs the node."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import codec
from shared.errors import ServerError
from tests.procs import Kvd, env_for, run_kvsh, send_and_close, wait_for

PASSWORDS = {"root": "root-pw", "app": "app-pw", "reader": "reader-pw"}


def kvd_cli(home: Path, node: Kvd, *args: str, login: str | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = env_for(home)
    argv = [sys.executable, "-m", "kvd", *args, "--port", str(node.port)]
    if login is not None:
        argv += ["--user", login]
        env["KV_PASSWORD"] = PASSWORDS[login]
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60)


def add_user(home: Path, node: Kvd, name: str, *flags: str, login: str | None = "root") -> None:
    out = kvd_cli(home, node, "user", "add", name, "--password-stdin", *flags, login=login,
                  stdin=PASSWORDS[name].encode() + b"\n")
    assert out.returncode == 0, out.stderr.decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Kvd, Kvd]]:
    """Two nodes; root (admin), app (write app:*, read pub:*) and reader (read *) added on
    the first, before the second joins."""
    home = tmp_path_factory.mktemp("users")
    a = Kvd(home, "a")
    b = Kvd(home, "b", ["--join", f"127.0.0.1:{a.port}"])
    try:
        a.start()
        add_user(home, a, "root", "--admin", login=None)  # the first: open, from loopback
        add_user(home, a, "app", "--write", "app:*", "--read", "pub:*")
        add_user(home, a, "reader", "--read", "*")
        b.start()
        yield home, a, b
    finally:
        for node in (b, a):
            try:
                node.stop()
            finally:
                node.kill()


def http(node: Kvd, method: str, path: str, body: bytes | None = None,
         auth: str | None = None, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}", data=body,
                                     method=method, headers=headers or {})
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def basic(user: str, password: str | None = None) -> str:
    raw = f"{user}:{password or PASSWORDS[user]}".encode()
    return "Basic " + base64.b64encode(raw).decode()


# -- the native door ---------------------------------------------------------------------


def test_native_door_needs_a_login_and_checks_permissions(cluster) -> None:
    home, a, _ = cluster
    with a.client() as anonymous:
        with pytest.raises(ServerError) as refused:
            anonymous.get("app:1")
        assert refused.value.code == "NOAUTH"
    with a.client(user="root", password=PASSWORDS["root"]) as root:
        root.set("other:x", "secret")
    with a.client(user="app", password=PASSWORDS["app"]) as app:
        app.set("app:1", "mine")
        assert app.get("app:1") == b"mine"
        with pytest.raises(ServerError) as refused:
            app.get("other:x")
        assert refused.value.code == "NOPERM"
        assert app.keys("*") == [b"app:1"]
    with a.client(user="reader", password=PASSWORDS["reader"]) as reader:
        assert reader.get("other:x") == b"secret"
        with pytest.raises(ServerError) as refused:
            reader.set("app:1", "nope")
        assert refused.value.code == "NOPERM"
    with pytest.raises(ServerError) as wrong, a.client(user="app", password="nope") as c:
        c.ping()
    assert wrong.value.code == "WRONGPASS"


def test_kvsh_logs_in_with_kv_password_and_exits_2_when_refused(cluster) -> None:
    home, a, _ = cluster
    refused = run_kvsh(home, a.port, "-c", "GET app:1")
    assert refused.returncode == 2 and "NOAUTH" in refused.stdout.decode()
    env = env_for(home) | {"KV_PASSWORD": PASSWORDS["app"]}
    ok = subprocess.run([sys.executable, "-m", "kvsh", "--port", str(a.port), "--user", "app"],
                        input=b"SET app:k v\nGET app:k\nGET other:x\n", capture_output=True,
                        env=env, timeout=60)
    lines = ok.stdout.decode().splitlines()
    assert lines[:2] == ["OK", "v"] and "NOPERM" in lines[2] and ok.returncode == 2
    # No password anywhere and no terminal to ask on: a clear refusal, not a hang.
    none = run_kvsh(home, a.port, "--user", "app", "-c", "PING")
    assert none.returncode == 2 and "KV_PASSWORD" in none.stderr.decode()


def test_only_an_admin_manages_users(cluster) -> None:
    home, a, _ = cluster
    out = kvd_cli(home, a, "user", "add", "mallory", "--password-stdin", "--admin",
                  login="app", stdin=b"pw\n")
    assert out.returncode == 2 and "NOPERM" in out.stderr.decode()
    listing = kvd_cli(home, a, "user", "list", "--json", login="root")
    names = {u["name"]: u for u in json.loads(listing.stdout)}
    assert set(names) == {"root", "app", "reader"} and names["root"]["admin"]
    assert "scrypt" not in listing.stdout.decode()  # hashes never leave the node


# -- users replicate ------------------------------------------------------------------------


def test_a_user_added_on_one_node_works_on_the_other_and_deletion_revokes(cluster) -> None:
    home, a, b = cluster
    PASSWORDS["temp"] = "temp-pw"
    add_user(home, a, "temp", "--read", "*")

    def logs_in_on_b() -> bool:
        try:
            with b.client(user="temp", password="temp-pw") as c:
                return c.ping() == "PONG"
        except ServerError:
            return False

    wait_for(logs_in_on_b, what="user temp to reach node b")
    session = b.client(user="temp", password="temp-pw")  # a session open on b throughout
    try:
        assert session.ping() == "PONG"
        assert kvd_cli(home, a, "user", "del", "temp", login="root").returncode == 0

        def refused_on_b() -> bool:
            try:
                session.ping()
            except ServerError as exc:
                return exc.code == "NOAUTH"
            return False

        wait_for(refused_on_b, what="the deletion to end temp's session on node b")
    finally:
        session.close()
    assert not logs_in_on_b()


# -- the Redis door -------------------------------------------------------------------------


def test_redis_door_auth_hello_noauth_noperm(cluster) -> None:
    home, a, _ = cluster
    anonymous = redis.Redis(port=a.resp_port, socket_timeout=10)
    with pytest.raises(redis.AuthenticationError):  # redis-py's class for -NOAUTH
        anonymous.get("app:1")
    app = redis.Redis(port=a.resp_port, username="app", password=PASSWORDS["app"],
                      socket_timeout=10)
    assert app.set("app:r", "1") and app.get("app:r") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.get("other:x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.flushdb()
    resp3 = redis.Redis(port=a.resp_port, username="reader", password=PASSWORDS["reader"],
                        protocol=3, socket_timeout=10)  # HELLO 3 AUTH reader ...
    assert resp3.get("app:r") == b"1"
    # One wrong password, sent by hand: redis-py would retry it (its AuthenticationError is a
    # ConnectionError), and the failures would slow every later login from this host.
    with socket.create_connection(("127.0.0.1", a.resp_port), timeout=10) as sock:
        sock.sendall(b"AUTH app wrong\r\n")
        assert sock.recv(1024).startswith(b"-WRONGPASS invalid username-password pair")
    for c in (anonymous, app, resp3):
        c.close()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_with_user_and_pass(cluster) -> None:
    home, a, _ = cluster
    base = ["redis-cli", "-p", str(a.resp_port), "--no-auth-warning"]
    out = subprocess.run([*base, "--user", "app", "--pass", PASSWORDS["app"], "SET", "app:c",
                          "v"], capture_output=True, timeout=30)
    assert out.stdout.strip() == b"OK", out.stderr
    out = subprocess.run([*base, "GET", "app:c"], capture_output=True, timeout=30)
    assert b"NOAUTH" in out.stdout + out.stderr


# -- the HTTP door --------------------------------------------------------------------------


def test_http_basic_bearer_and_statuses(cluster) -> None:
    home, a, _ = cluster
    status, body, headers = http(a, "GET", "/v1/kv/app:1")
    assert status == 401 and json.loads(body)["error"]["code"] == "NOAUTH"
    assert headers.get("www-authenticate", "").startswith("Basic")
    assert http(a, "GET", "/health")[0] == 200  # load balancers need no login
    assert http(a, "PUT", "/v1/kv/app:h", b"v", basic("app"))[0] == 200
    assert http(a, "GET", "/v1/kv/app:h", auth=basic("app"))[1] == b"v"
    assert http(a, "GET", "/v1/kv/other:x", auth=basic("app"))[0] == 403
    assert http(a, "PUT", "/v1/kv/app:h", b"w", basic("reader"))[0] == 403
    assert http(a, "GET", "/v1/kv/app:h", auth=basic("app", "wrong"))[0] == 401
    listing = json.loads(http(a, "GET", "/v1/kv?prefix=", auth=basic("app"))[1])
    assert listing["keys"] and all(k.startswith("app:") for k in listing["keys"])
    assert http(a, "GET", "/v1/watch?prefix=other", auth=basic("app"))[0] == 403
    token = kvd_cli(home, a, "user", "token", "app", login="app").stdout.decode().strip()
    assert token.startswith("kvt.")
    assert http(a, "GET", "/v1/kv/app:h", auth=f"Bearer {token}")[1] == b"v"
    assert kvd_cli(home, a, "user", "token", "app", "--revoke", login="root").returncode == 0
    assert http(a, "GET", "/v1/kv/app:h", auth=f"Bearer {token}")[0] == 401
    # curl, as a user would type it.
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-s", "-u", f"app:{PASSWORDS['app']}",
                              f"http://127.0.0.1:{a.http_port}/v1/kv/app:h"],
                             capture_output=True, timeout=30)
        assert out.stdout == b"v"


def test_console_login_sets_a_session_cookie(cluster) -> None:
    home, a, _ = cluster
    body = json.dumps({"user": "reader", "password": PASSWORDS["reader"]}).encode()
    status, reply, headers = http(a, "POST", "/v1/login", body,
                                  headers={"content-type": "application/json"})
    assert status == 200 and json.loads(reply)["name"] == "reader"
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    who = http(a, "GET", "/v1/whoami", headers={"cookie": cookie})
    assert who[0] == 200 and json.loads(who[1])["read"] == ["*"]
    # The console's own fetches get no Basic challenge (no browser dialog over its form).
    _, _, plain = http(a, "GET", "/v1/info", headers={"x-kv-console": "1"})
    assert "www-authenticate" not in {k.lower() for k in plain}
    assert http(a, "POST", "/v1/login", b'{"user": "reader", "password": "x"}')[0] == 401


# -- brute force ----------------------------------------------------------------------------


def test_brute_force_is_slowed_and_counted(cluster) -> None:
    home, a, _ = cluster
    with a.client(user="root", password=PASSWORDS["root"]) as root:
        before = root.info()
    # 200 guesses as fast as one connection can send them (pipelined, by hand: redis-py
    # would retry each refusal).
    with socket.create_connection(("127.0.0.1", a.resp_port), timeout=30) as sock:
        sock.sendall(b"".join(b"AUTH root guess%d\r\n" % i for i in range(200)))
        replies = b""
        while replies.count(b"\r\n") < 200:
            chunk = sock.recv(65536)
            assert chunk, "the node closed the connection"
            replies += chunk
    attempts = replies.count(b"-WRONGPASS")

    def info_as_root() -> dict | None:
        try:
            with a.client(user="root", password=PASSWORDS["root"]) as root:
                return root.info()
        except ServerError:  # still asked to wait: a refusal does not extend the wait
            return None

    after = wait_for(info_as_root, what="the host's wait after the guesses to end")
    checked = after["auth_failures"] - before["auth_failures"]
    throttled = after["auth_throttled"] - before["auth_throttled"]
    assert attempts == 200
    # Exponential back-off: the guesses actually checked are a handful, the rest refused.
    assert checked < 20 and throttled > 180
    assert "failed login" in a.stderr() and "127.0.0.1" in a.stderr()
    status, metrics, _ = http(a, "GET", "/metrics")
    assert b"kv_auth_failures" in metrics


# -- protected mode -------------------------------------------------------------------------


def test_protected_mode_refuses_a_wildcard_bind_without_users(tmp_path: Path) -> None:
    node = Kvd(tmp_path, "open", ["--bind", "0.0.0.0"])
    out = subprocess.run(node.argv(), capture_output=True, env=env_for(tmp_path), timeout=60)
    assert out.returncode != 0
    line = out.stderr.decode().strip().splitlines()[-1]
    assert "kvd user add" in line and "--insecure" in line


def test_insecure_allows_it(kvd_factory) -> None:
    node = kvd_factory("wide", ["--bind", "0.0.0.0", "--insecure"])
    with node.client() as c:
        assert c.ping() == "PONG"
    assert "--insecure" in node.stderr()


# -- hostile authentication input -----------------------------------------------------------


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.binary(max_size=40), max_size=4), raw=st.binary(max_size=200))
def test_fuzzed_auth_never_breaks_a_door(cluster, args: list[bytes], raw: bytes) -> None:
    home, a, _ = cluster
    with a.client(timeout=5) as c:  # native: AUTH with any arguments
        reply = c.execute(b"AUTH", *args)
        assert reply.is_error or reply.value == "OK"
    parts = [b"AUTH", *args]
    resp = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
    send_and_close(a.resp_port, resp + raw)
    send_and_close(a.http_port, b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\nAuthorization: "
                   + raw.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n")
    assert alive(a)


def alive(node: Kvd) -> bool:
    """The node answers (a login may be refused for a while after the fuzzing's failures)."""
    with node.client(timeout=5) as c:
        reply = c.execute("PING")
    return reply.value == "PONG" or reply.value[0] == "NOAUTH"


def test_a_garbage_auth_frame_on_the_native_door(cluster) -> None:
    home, a, _ = cluster
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{a.port}")
    try:
        for body in (b"AUTH", b"\x93AUTH", codec.encode_request(1, [b"AUTH"]) + b"x"):
            sock.send(body)
            assert sock.poll(10_000), "no reply to a malformed message"
            sock.recv()
    finally:
        sock.close()
    assert alive(a)
