"""The loop's consensus driver, sans-IO: Consensus objects wired to each other in memory, on
real raft files in temp dirs. Founding, joining as a learner then a voter, leaving, the
INFO fields, a dropped frame, and a restart from the files."""

from __future__ import annotations

import random
from pathlib import Path

from kvd.consensus import Consensus


class Net:
    """Consensus nodes with an in-memory wire: `send` queues, `deliver` hands frames over."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: dict[str, Consensus] = {}
        self.status: dict[str, str] = {}
        self.wire: list[tuple[str, dict]] = []

    def add(self, name: str, found: bool) -> Consensus:
        def send(to: str, body: dict) -> bool:
            if to not in self.nodes:
                return False
            self.wire.append((to, body))
            return True

        node = Consensus(name, self.tmp / name, found, send,
                         lambda: list(self.status.items()), random.Random(name))
        self.nodes[name] = node
        self.status[name] = "alive"
        return node

    def step(self) -> None:
        for node in self.nodes.values():
            node.tick()
            node.drive()
        for _ in range(50):  # deliver until quiet (bounded)
            wire, self.wire = self.wire, []
            if not wire:
                break
            for to, frame in wire:
                if to in self.nodes:
                    self.nodes[to].receive(frame)
            for node in self.nodes.values():
                node.drive()

    def run_until(self, predicate, steps: int = 400) -> bool:  # noqa: ANN001
        for _ in range(steps):
            if predicate():
                return True
            self.step()
        return predicate()


def test_a_founder_leads_alone_then_adds_who_joins(tmp_path: Path) -> None:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    assert net.run_until(lambda: a.info()["raft_role"] == "leader")
    b = net.add("b", found=False)
    net.add("c", found=False)
    assert b.info()["raft_voters"] == ""  # a joiner waits to be added
    assert net.run_until(lambda: all(n.info()["raft_voters"] == "a,b,c"
                                     for n in net.nodes.values()))
    assert {n.info()["raft_leader"] for n in net.nodes.values()} == {"a"}
    assert b.role_of("a") == "leader" and b.role_of("c") == "voter" and b.role_of("x") == ""


def test_a_member_that_left_is_removed(tmp_path: Path) -> None:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    net.add("b", found=False)
    net.add("c", found=False)
    assert net.run_until(lambda: a.info()["raft_voters"] == "a,b,c")
    net.status["c"] = "left"
    assert net.run_until(lambda: a.info()["raft_voters"] == "a,b")


def test_garbage_frames_are_counted_not_fatal(tmp_path: Path) -> None:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    for junk in (b"", b"\x00", b"\xc1\xc1", b"\x93\x01\x02\x03"):
        a.receive({"m": junk})
    a.receive({"m": 7})
    a.receive({})
    assert a.info()["raft_messages_dropped"] == 6
    assert net.run_until(lambda: a.info()["raft_role"] == "leader")


def test_a_restart_comes_back_from_the_files(tmp_path: Path) -> None:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    net.add("b", found=False)
    net.add("c", found=False)
    assert net.run_until(lambda: a.info()["raft_voters"] == "a,b,c")
    term = a.info()["raft_term"]
    del net.nodes["a"]  # a crash: the object goes, the files stay
    again = net.add("a", found=True)  # found=True again: its files say it has a group already
    info = again.info()
    assert info["raft_voters"] == "a,b,c" and info["raft_term"] >= term
    assert net.run_until(lambda: len({n.info()["raft_leader"] for n in net.nodes.values()}
                                     - {""}) == 1)


def test_a_storage_that_fails_holds_the_ready_and_retries(tmp_path: Path, monkeypatch) -> None:
    """Out of descriptors or disk: nothing of the Ready is sent, the core takes no input, and
    the same Ready is saved again once the storage works — no crash, no lost promise."""
    net = Net(tmp_path)
    a = net.add("a", found=True)
    save = a.storage.save
    failing = {"on": True}

    def flaky(*args, **kw):  # noqa: ANN002, ANN003
        if failing["on"]:
            raise OSError(24, "Too many open files", "raft.log")
        return save(*args, **kw)

    monkeypatch.setattr(a.storage, "save", flaky)
    for _ in range(40):
        net.step()
    info = a.info()
    assert info["raft_storage_errors"] > 0 and "Too many open files" in info["raft_error"]
    assert a.info()["raft_applied"] == 1  # nothing applied: nothing could be saved
    failing["on"] = False
    assert net.run_until(lambda: a.info()["raft_error"] == ""
                         and a.info()["raft_role"] == "leader" and a.info()["raft_applied"] > 1)


def test_the_log_is_snapshotted_and_a_restart_restores_the_state(tmp_path: Path,
                                                                   monkeypatch) -> None:
    import kvd.consensus as consensus_mod

    monkeypatch.setattr(consensus_mod, "SNAPSHOT_EVERY", 20)
    net = Net(tmp_path)
    a = net.add("a", found=True)
    assert net.run_until(lambda: a.info()["raft_role"] == "leader")
    answers = [a.submit(("put", b"k%d" % i, b"v%d" % i, 0)) for i in range(60)]
    assert net.run_until(lambda: all(d.done for d in answers))
    assert all(isinstance(d.value, dict) and d.value["revision"] > 0 for d in answers)
    assert a.info()["raft_snapshots"] >= 1 and a.storage.snapshot.index >= 20
    del net.nodes["a"]
    again = net.add("a", found=True)
    assert again.coord.image() == a.coord.image()
    assert net.run_until(lambda: again.info()["raft_role"] == "leader")
    read = again.submit(("get", b"k59"))
    assert net.run_until(lambda: read.done) and read.value["value"] == b"v59"


def test_a_follower_forwards_and_answers_its_own_client(tmp_path: Path) -> None:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    b = net.add("b", found=False)
    assert net.run_until(lambda: b.info()["raft_voters"] == "a,b"
                         and b.info()["raft_leader"] == "a")
    answer = b.submit(("cas.rev", b"x", 0, b"1", 0))
    assert net.run_until(lambda: answer.done) and answer.value["revision"] > 0
    again = b.submit(("cas.rev", b"x", 0, b"2", 0))
    assert net.run_until(lambda: again.done)
    assert getattr(again.value, "code", "") == "COMPARE_FAILED"
    assert a.coord.image() == b.coord.image()


def _three(tmp_path: Path) -> tuple[Net, Consensus, Consensus, Consensus]:
    net = Net(tmp_path)
    a = net.add("a", found=True)
    b = net.add("b", found=False)
    c = net.add("c", found=False)
    assert net.run_until(lambda: all(n.info()["raft_voters"] == "a,b,c"
                                     and n.info()["raft_leader"] == "a"
                                     for n in net.nodes.values()))
    return net, a, b, c


def test_reads_take_no_log_entry_and_see_the_last_write_on_any_node(tmp_path: Path) -> None:
    """ReadIndex: a read on the leader or on a follower is confirmed by a heartbeat round,
    not by a log entry, and answers with every write acknowledged before it was asked."""
    net, a, b, c = _three(tmp_path)
    write = c.submit(("put", b"k", b"v1", 0))
    assert net.run_until(lambda: write.done) and write.value["revision"] > 0
    last = a.raft.log.last_index
    reads = [node.submit(("get", b"k")) for node in (a, b, c) for _ in range(5)]
    assert net.run_until(lambda: all(r.done for r in reads))
    assert {r.value["value"] for r in reads} == {b"v1"}
    assert {r.value["revision"] for r in reads} == {write.value["revision"]}
    assert a.raft.log.last_index == last  # fifteen reads, no entry
    assert not a.requests.remote
    assert not any(n.requests.reads or n.requests.confirmed for n in (a, b, c))


def test_a_follower_read_waits_until_it_has_applied_what_the_leader_had_committed(
        tmp_path: Path) -> None:
    """The leader commits a write while every Raft message to follower b is lost (c makes
    the quorum); b's read is confirmed with the leader's commit index, which b has not
    applied: b must wait for it rather than answer from its stale state."""
    net, a, b, _ = _three(tmp_path)

    def deliver_all_but_raft_to_b() -> None:
        for node in net.nodes.values():
            node.drive()
        for _ in range(50):
            wire, net.wire = net.wire, []
            for to, frame in wire:
                if not (to == "b" and "m" in frame):
                    net.nodes[to].receive(frame)
            for node in net.nodes.values():
                node.drive()

    write = a.submit(("put", b"k", b"new", 0))
    deliver_all_but_raft_to_b()
    assert write.done and b.coord.image() != a.coord.image()
    read = b.submit(("get", b"k"))
    deliver_all_but_raft_to_b()
    assert not read.done and b.requests.confirmed  # confirmed, not yet applied here
    assert net.run_until(lambda: read.done)
    assert read.value["value"] == b"new"


def test_a_read_the_leader_cannot_confirm_answers_tryagain(tmp_path: Path) -> None:
    """The leader cut off from both followers cannot confirm it still leads: its read times
    out (or fails when it steps down) as TRYAGAIN, never with a possibly stale value."""
    net, a, b, c = _three(tmp_path)
    del net.nodes["b"], net.nodes["c"]
    read = a.submit(("get", b"k"))
    assert net.run_until(lambda: read.done, steps=200)
    assert getattr(read.value, "code", "") == "TRYAGAIN"


def test_forwarded_read_messages_that_make_no_sense_are_counted(tmp_path: Path) -> None:
    net, a, _, _ = _three(tmp_path)
    dropped = a.info()["raft_messages_dropped"]
    for junk in ({"q": 1}, {"q": ["b"]}, {"q": ["b", "x"]}, {"q": [1, b"x"]},
                 {"qi": [b"x", 1]}, {"qi": 5}, {"q": ["b", b"x" * 100]}):
        a.receive(junk)
    assert a.info()["raft_messages_dropped"] == dropped + 7
    assert not a.requests.remote


def test_a_command_sent_to_the_new_leader_is_not_refused_for_its_election(
        tmp_path: Path) -> None:
    """A node's core can learn the new leader from a message before the node reports the
    change (at its next drive): a command forwarded to (or proposed by) that leader in
    between is in the new leader's hands, and must be answered, not told TRYAGAIN."""
    net = Net(tmp_path)
    net.add("a", found=True)
    for name in ("b", "c"):
        net.add(name, found=False)
    live = [net.nodes["b"], net.nodes["c"]]
    assert net.run_until(lambda: all(n.info()["raft_voters"] == "a,b,c"
                                     and n.info()["raft_leader"] == "a" for n in live))
    answer = None
    for _ in range(400):  # "a" is gone: the others elect, and one of them takes a command
        for node in live:
            node.tick()
            node.drive()
        for _ in range(50):
            wire, net.wire = net.wire, []
            for to, body in wire:
                if to == "a":
                    continue
                node = net.nodes[to]
                node.receive(body)
                if answer is None and node.raft.leader not in (None, "a"):
                    answer = node.submit(("put", b"k", b"v", 0))  # before its next drive
                node.drive()
        if answer is not None and answer.done:
            break
    assert answer is not None and answer.done
    assert isinstance(answer.value, dict) and answer.value["revision"] > 0, answer.value


def test_a_read_sees_the_writes_submitted_before_it_on_its_node(tmp_path: Path) -> None:
    """A client that pipelines CSET then CGET (no wait between) reads its own write: the
    read's confirmation alone could predate the write's commit, so it also waits for the
    writes its node took before it — on the leader and on a follower."""
    net, a, b, _ = _three(tmp_path)
    for node, n in ((a, 1), (b, 2), (a, 3), (b, 4)):
        write = node.submit(("put", b"k", b"v%d" % n, 0))
        read = node.submit(("get", b"k"))
        assert net.run_until(lambda: read.done and write.done)  # noqa: B023
        assert read.value["value"] == b"v%d" % n
        assert read.value["revision"] == write.value["revision"]
    # b's write commits with a and c while b hears no Raft message: the leader confirms b's
    # read with a commit index from before the write; b must not answer it from its state
    write, read = b.submit(("put", b"k", b"v5", 0)), b.submit(("get", b"k"))
    for _ in range(20):
        for node in net.nodes.values():
            node.drive()
        wire, net.wire = net.wire, []
        for to, frame in wire:
            if not (to == "b" and "m" in frame):
                net.nodes[to].receive(frame)
    assert a.coord.image() != b.coord.image() and b.requests.confirmed and not read.done
    assert net.run_until(lambda: read.done and write.done)
    assert read.value["value"] == b"v5"



def test_a_read_does_not_see_the_writes_submitted_after_it_on_its_node(
        tmp_path: Path) -> None:
    """CGET then CSET in one pipeline: the read is confirmed in the round that commits the
    write, and is answered from the state before the write applies, as if run one by one."""
    net, a, b, _ = _three(tmp_path)
    for node, n in ((a, 1), (b, 2), (a, 3), (b, 4)):
        before = node.submit(("get", b"k"))
        write = node.submit(("put", b"k", b"v%d" % n, 0))
        after = node.submit(("get", b"k"))
        assert net.run_until(lambda: after.done and write.done)  # noqa: B023
        old = before.value["value"]
        assert old == (None if n == 1 else b"v%d" % (n - 1))
        assert after.value["value"] == b"v%d" % n
