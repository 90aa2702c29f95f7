"""The Raft core, one behaviour at a time: synchronous delivery, fake ticks, crafted logs.

Every scenario runs through tests/raftsim.py's `Net`, so the invariant checker watches each
step here too (election safety, log matching, leader completeness, state machine safety).
"""

from __future__ import annotations

import random

import pytest

from kvd.raft.config import ConfChange, Config, ConfOp, VoteResult, refusal, vote_result
from kvd.raft.core import Options, Raft, Role
from kvd.raft.errors import ConfigRefused, NotLeader, ProposalDropped
from kvd.raft.log import RaftLog
from kvd.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from kvd.raft.storage import HardState, MemoryStorage, Restored
from tests.raftsim import Net

T = Options().election_ticks
ABC = ["n1", "n2", "n3"]


def _entry(index: int, term: int) -> Entry:
    # the same (index, term) always carries the same data: the checker holds logs to that
    return Entry(term, index, EntryKind.NORMAL, b"%d:%d" % (index, term))


def _state(terms: list[int], voters: list[str], term: int) -> Restored:
    """A node after the founding snapshot (index 1, term 1) with entries 2.. of `terms`."""
    entries = [_entry(2 + k, t) for k, t in enumerate(terms)]
    return Restored(HardState(term, None, 1), Snapshot(1, 1, Config.of(voters)), entries)


def _terms(raft: Raft) -> list[int]:
    return [e.term for e in raft.log.entries]


# -- elections --------------------------------------------------------------------------------


def test_a_campaign_elects_a_leader_whose_noop_commits_everywhere() -> None:
    net = Net(ABC)
    leader = net.elect("n1")
    assert leader.term == 2
    assert leader.log.entries[-1] == Entry(2, 2, EntryKind.NOOP, b"")
    net.tick("n1")
    net.deliver()
    for name in ABC:
        raft = net.raft(name)
        assert (raft.term, raft.lead, raft.log.committed) == (2, "n1", 2)
        assert net.nodes[name].sm.index == 2
    assert [net.raft(n).role for n in ABC] == [Role.LEADER, Role.FOLLOWER, Role.FOLLOWER]


def test_the_election_timeout_is_random_in_t_to_2t() -> None:
    waited = set()
    for seed in range(60):
        net = Net(ABC, seed=seed)
        raft, ticks = net.raft("n1"), 0
        while raft.role is Role.FOLLOWER:
            raft.tick()
            ticks += 1
        waited.add(ticks)
    assert min(waited) >= T and max(waited) < 2 * T and len(waited) >= T // 2


def test_only_voters_answers_count_in_a_vote() -> None:
    voters = frozenset(ABC)
    assert vote_result(voters, {"n1": True, "learner": True, "stranger": True}) \
        is VoteResult.PENDING
    assert vote_result(voters, {"n1": True, "n2": True}) is VoteResult.WON
    assert vote_result(voters, {"n1": True, "n2": False, "n3": False}) is VoteResult.LOST


def test_a_candidate_with_a_stale_log_gets_no_vote() -> None:
    net = Net(ABC, states={"n1": _state([2], ABC, 2), "n2": _state([2, 2], ABC, 2),
                           "n3": _state([2, 2], ABC, 2)})
    net.raft("n1").campaign()
    net.flush("n1")
    net.deliver()
    assert net.raft("n1").role is not Role.LEADER
    assert net.raft("n1").term == 2  # pre-vote lost: nobody's term moved


def test_pre_vote_keeps_a_cut_off_node_from_raising_the_term() -> None:
    net = Net(ABC)
    net.elect("n1")
    net.isolate("n3")
    net.tick("n3", 10 * T)
    assert net.raft("n3").term == 2 and net.raft("n3").role is Role.PRE_CANDIDATE
    net.heal()
    net.tick("n1")  # a heartbeat reaches n3
    net.deliver()
    assert net.raft("n1").role is Role.LEADER and net.raft("n1").term == 2
    assert (net.raft("n3").role, net.raft("n3").lead) == (Role.FOLLOWER, "n1")


def test_without_pre_vote_the_same_node_deposes_a_healthy_leader() -> None:
    """Why pre-vote is on: the returning node's inflated term ends a working leadership."""
    net = Net(ABC, opts=Options(pre_vote=False, check_quorum=False))
    net.elect("n1")
    net.isolate("n3")
    net.tick("n3", 10 * T)
    assert net.raft("n3").term > 5
    net.heal()
    while net.raft("n1").term == 2:
        net.tick("n3")
        net.deliver()
    assert not (net.raft("n1").role is Role.LEADER and net.raft("n1").term == 2)


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    """Within one full check window (an election timeout) of silence: between T and 2T ticks,
    depending on where in its window the leader was cut off."""
    net = Net(ABC)
    net.elect("n1")
    net.isolate("n1")
    ticks = 0
    while net.raft("n1").role is Role.LEADER:
        net.tick("n1")
        ticks += 1
    assert T <= ticks <= 2 * T
    assert (net.raft("n1").role, net.raft("n1").lead, net.raft("n1").term) == \
        (Role.FOLLOWER, None, 2)


def test_without_check_quorum_a_cut_off_leader_stays() -> None:
    net = Net(ABC, opts=Options(check_quorum=False))
    net.elect("n1")
    net.isolate("n1")
    net.tick("n1", 10 * T)
    assert net.raft("n1").role is Role.LEADER


def test_a_follower_with_a_live_leader_ignores_votes_unless_leadership_is_handed_over() -> None:
    net = Net(ABC)
    net.elect("n1")
    n2 = net.raft("n2")
    n2.step(VoteRequest("n3", "n2", 9, 100, 8))
    net.flush("n2")
    assert n2.term == 2 and not [m for m in net.queue if isinstance(m, VoteResponse)]
    n2.step(VoteRequest("n3", "n2", 9, 100, 8, transfer=True))
    net.flush("n2")
    assert n2.term == 9 and n2.vote == "n3"
    assert [m.granted for m in net.queue if isinstance(m, VoteResponse)] == [True]


def test_a_follower_that_lost_its_leader_grants_votes_again() -> None:
    net = Net(ABC)
    net.elect("n1")
    n2 = net.raft("n2")
    n2.election_elapsed = T  # an election timeout without hearing from n1
    n2.step(VoteRequest("n3", "n2", 3, 100, 2))
    net.flush("n2")
    assert n2.vote == "n3"


# -- replication ------------------------------------------------------------------------------


def test_reject_hints_skip_a_whole_term_per_round_trip() -> None:
    leader_log = [2] * 50 + [5] * 50  # entries 2..101
    behind = [2] * 30 + [3] * 60  # 2..91, diverging from 32 on
    net = Net(ABC, states={"n1": _state(leader_log, ABC, 5), "n2": _state(behind, ABC, 5),
                           "n3": _state(leader_log, ABC, 5)})
    net.elect("n1")
    rejects = [m for m in net.delivered if isinstance(m, AppendResponse) and m.reject]
    assert len([m for m in rejects if m.src == "n2"]) <= 2  # one per diverging term, not 60
    assert _terms(net.raft("n2")) == _terms(net.raft("n1")) == leader_log + [6]


def test_a_late_duplicate_append_never_cuts_newer_entries() -> None:
    log = RaftLog(Snapshot(1, 1, Config.of(ABC)), [], 1)
    assert log.maybe_append(1, 1, 1, [_entry(2, 2), _entry(3, 2), _entry(4, 2)]) == 4
    assert log.maybe_append(1, 1, 1, [_entry(2, 2)]) == 2  # the late one
    assert log.last_index == 4
    assert log.maybe_append(1, 1, 1, [_entry(2, 2), _entry(3, 3)]) == 3  # a real conflict
    assert [e.term for e in log.entries] == [2, 3]


@pytest.mark.parametrize(("index", "term", "expected"), [
    (7, 9, (7, 4)),  # every term below 9: the hint stays
    (7, 3, (4, 3)),  # skip the term-4 entries 5..7
    (7, 2, (1, 1)),  # back to the snapshot
    (20, 4, (7, 4)),  # clipped to the last index
])
def test_find_conflict_by_term(index: int, term: int, expected: tuple[int, int]) -> None:
    log = RaftLog(Snapshot(1, 1, Config()), [_entry(i, t) for i, t in
                                             [(2, 3), (3, 3), (4, 3), (5, 4), (6, 4), (7, 4)]], 1)
    assert log.find_conflict_by_term(index, term) == expected


def test_figure_8_an_earlier_terms_entry_on_a_majority_is_not_committed() -> None:
    """Raft paper, Figure 8, with five nodes. n1 leads term 4 and gets its term-2 entry (index
    2) onto n2 and n4 too: a majority. Counting it would commit it, yet n5, whose index 2 is
    of term 3, can still be elected by n3 and n4 and overwrite it."""
    five = ["n1", "n2", "n3", "n4", "n5"]
    opts = Options(pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    net = Net(five, opts=opts, states={"n1": _state([2], five, 3), "n2": _state([2], five, 3),
                                       "n3": _state([], five, 3), "n4": _state([], five, 3),
                                       "n5": _state([3], five, 3)})
    # n3 and n5 hear nothing from n1; n4 gets index 2 but never index 3 (a probe carrying
    # index 3 that n4 rejects for want of index 2 gets through: that is how n1 backs up)
    net.drop = lambda m: (isinstance(m, AppendEntries | Heartbeat) and m.dst in ("n3", "n5")
                          or isinstance(m, AppendEntries) and m.dst == "n4"
                          and any(e.index == 3 for e in m.entries)
                          and net.raft("n4").log.last_index >= 2)
    leader = net.elect("n1")
    assert leader.term == 4
    assert [net.raft(n).log.term(2) for n in five] == [2, 2, None, 2, 3]  # on a majority
    assert leader.log.committed == 1  # ... and still not committed: its term is not 4
    net.crash("n1")
    net.drop = lambda m: False
    assert net.elect("n5").term == 5  # with n3's and n4's votes
    net.tick("n5")
    net.deliver()
    assert [net.raft(n).log.term(2) for n in five if n != "n1"] == [3, 3, 3, 3]
    assert net.checker.committed[2] == 3


def test_a_lagging_follower_gets_the_snapshot_when_the_log_was_compacted() -> None:
    net = Net(ABC)
    net.elect("n1")
    net.isolate("n3")
    for k in range(20):
        net.propose("n1", b"v%d" % k)
    snap = net.nodes["n1"].compact()
    assert snap is not None and snap.index == 22
    assert net.raft("n1").log.first_index == 23
    net.heal()
    net.tick("n1")
    net.deliver()
    assert [m.snapshot.index for m in net.delivered if isinstance(m, InstallSnapshot)] == [22]
    n1, n3 = net.nodes["n1"], net.nodes["n3"]
    assert n3.storage.snapshot.index == 22 and (n3.sm.index, n3.sm.digest) == \
        (n1.sm.index, n1.sm.digest)
    net.propose("n1", b"after")
    assert net.raft("n3").log.committed == net.raft("n1").log.committed == 23


# -- learners and membership ------------------------------------------------------------------


def test_a_learner_receives_the_log_but_never_campaigns_and_never_counts() -> None:
    net = Net(ABC + ["n4"], voters=ABC, learners=("n4",))
    net.elect("n1")
    net.propose("n1", b"x")
    assert net.nodes["n4"].sm.index == 3
    net.isolate("n4")
    net.tick("n4", 10 * T)
    assert (net.raft("n4").role, net.raft("n4").term) == (Role.FOLLOWER, 2)
    net.heal()
    net.isolate("n2")
    net.isolate("n3")
    net.propose("n1", b"y")  # reaches the learner only
    assert net.raft("n4").log.last_index == 4
    assert net.raft("n1").log.committed == 3
    net.heal()
    net.tick("n1")
    net.deliver()
    assert net.raft("n1").log.committed == 4


@pytest.mark.parametrize(("change", "why"), [
    (ConfChange(ConfOp.ADD_VOTER, "n1"), "already a member"),
    (ConfChange(ConfOp.ADD_LEARNER, "n4"), "already a member"),
    (ConfChange(ConfOp.PROMOTE, "n2"), "not a learner"),
    (ConfChange(ConfOp.REMOVE, "n9"), "not a member"),
    (ConfChange(ConfOp.ADD_VOTER, "n9"), "at most 5"),
    (ConfChange(ConfOp.PROMOTE, "n4"), "at most 5"),
    (ConfChange(ConfOp.ADD_LEARNER, "n9"), None),
    (ConfChange(ConfOp.REMOVE, "n4"), None),
    (ConfChange(ConfOp.REMOVE, "n1"), None),
])
def test_config_change_rules(change: ConfChange, why: str | None) -> None:
    config = Config.of(["n1", "n2", "n3", "n5", "n6"], ["n4"])
    got = refusal(config, change)
    assert (got is None) if why is None else (why in str(got))
    assert refusal(Config.of(["n1"]), ConfChange(ConfOp.REMOVE, "n1")) == "n1 is the last voter"


def test_one_server_at_a_time_up_to_removing_the_leader() -> None:
    net = Net(ABC + ["n4"], voters=ABC)  # n4 starts empty: it learns the cluster from n1
    leader = net.elect("n1")
    leader.propose_config(ConfChange(ConfOp.ADD_LEARNER, "n4", b"n4:7000"))
    with pytest.raises(ConfigRefused, match="not committed yet"):
        leader.propose_config(ConfChange(ConfOp.PROMOTE, "n4"))
    net.flush("n1")
    net.deliver()
    assert net.raft("n4").config == Config.of(ABC, ["n4"])
    assert [m for m in net.delivered if isinstance(m, InstallSnapshot) and m.dst == "n4"]
    leader.propose_config(ConfChange(ConfOp.PROMOTE, "n4"))
    net.flush("n1")
    net.deliver()
    assert net.raft("n2").config == Config.of(ABC + ["n4"])
    leader.propose_config(ConfChange(ConfOp.REMOVE, "n1"))
    net.flush("n1")
    net.deliver()
    assert net.raft("n1").role is Role.FOLLOWER and not net.raft("n1").promotable
    net.tick_all(3 * T)
    new = net.leader()
    assert new in ("n2", "n3", "n4") and net.raft(new).config == Config.of(["n2", "n3", "n4"])
    term = net.raft(new).term
    net.tick("n1", 10 * T)  # the removed node never campaigns
    assert net.raft(new).term == term and net.raft(new).role is Role.LEADER


def test_a_new_leader_changes_no_config_before_committing_in_its_term() -> None:
    net = Net(ABC)
    net.drop = lambda m: isinstance(m, AppendEntries)
    leader = net.elect("n1")
    with pytest.raises(ConfigRefused, match="not committed an entry of its term"):
        leader.propose_config(ConfChange(ConfOp.REMOVE, "n3"))


# -- leadership transfer ----------------------------------------------------------------------


def test_leadership_transfer_to_an_up_to_date_voter() -> None:
    net = Net(ABC)
    leader = net.elect("n1")
    leader.transfer_leadership("n2")
    assert [type(m) for m in net.raft("n1").out.messages] == [TimeoutNow]
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    net.flush("n1")
    net.deliver()
    assert (net.raft("n2").role, net.raft("n2").term) == (Role.LEADER, 3)
    assert net.raft("n1").lead == "n2"


def test_leadership_transfer_catches_the_target_up_first() -> None:
    net = Net(ABC)
    net.elect("n1")
    net.isolate("n3")
    for k in range(5):
        net.propose("n1", b"v%d" % k)
    net.heal()
    net.raft("n1").transfer_leadership("n3")
    net.flush("n1")
    net.deliver()
    assert net.raft("n3").role is Role.LEADER
    assert net.raft("n3").log.last_index == 8  # 2 no-ops + 5 writes + its own no-op


def test_a_transfer_to_an_unreachable_node_is_given_up() -> None:
    net = Net(ABC)
    leader = net.elect("n1")
    net.isolate("n3")
    leader.transfer_leadership("n3")
    net.flush("n1")
    net.deliver()
    for _ in range(T):
        with pytest.raises(ProposalDropped):
            leader.propose(b"x")
        net.tick_all()
    assert leader.role is Role.LEADER
    leader.propose(b"x")


def test_transfer_needs_a_voter_and_a_leader() -> None:
    net = Net(ABC + ["n4"], voters=ABC, learners=("n4",))
    leader = net.elect("n1")
    with pytest.raises(ConfigRefused, match="not a voter"):
        leader.transfer_leadership("n4")
    with pytest.raises(NotLeader) as e:
        net.raft("n2").transfer_leadership("n3")
    assert e.value.leader == "n1"


# -- ReadIndex --------------------------------------------------------------------------------


def test_read_index_waits_for_a_heartbeat_round_of_this_term() -> None:
    net = Net(ABC)
    leader = net.elect("n1")
    leader.read_index(b"r1")
    net.flush("n1")
    assert net.nodes["n1"].read_states == []
    beats = [m for m in net.queue if isinstance(m, Heartbeat)]
    assert {m.dst for m in beats} == {"n2", "n3"} and {m.ctx for m in beats} == {b"r1"}
    net.deliver()
    assert [(r.ctx, r.index) for r in net.nodes["n1"].read_states] == [(b"r1", 2)]


def test_a_new_leader_answers_reads_only_after_committing_in_its_term() -> None:
    net = Net(ABC)
    net.drop = lambda m: isinstance(m, AppendEntries)
    leader = net.elect("n1")
    leader.read_index(b"early")
    net.flush("n1")
    net.deliver()
    assert net.nodes["n1"].read_states == []  # heartbeats answered, but commit is stale
    net.drop = lambda m: False
    net.tick("n1")
    net.deliver()
    assert [(r.ctx, r.index) for r in net.nodes["n1"].read_states] == [(b"early", 2)]


def test_a_cut_off_leader_confirms_no_read() -> None:
    net = Net(ABC)
    leader = net.elect("n1")
    net.isolate("n1")
    leader.read_index(b"r")
    net.tick("n1", 2 * T)
    net.deliver()
    assert net.nodes["n1"].read_states == [] and leader.role is Role.FOLLOWER


def test_followers_refuse_reads_and_writes_naming_the_leader() -> None:
    net = Net(ABC)
    net.elect("n1")
    for call in (lambda r: r.read_index(b"r"), lambda r: r.propose(b"x")):
        with pytest.raises(NotLeader) as e:
            call(net.raft("n2"))
        assert e.value.leader == "n1" and "n1" in str(e.value)


# -- the Ready contract and restarts ----------------------------------------------------------


def test_a_ready_must_be_advanced_before_anything_else() -> None:
    raft = Raft("n1", MemoryStorageState(), random.Random(0))
    raft.campaign()
    raft.ready()
    with pytest.raises(RuntimeError):
        raft.ready()
    with pytest.raises(RuntimeError):
        raft.tick()
    raft.advance()
    raft.tick()
    with pytest.raises(RuntimeError):
        raft.advance()


def MemoryStorageState() -> Restored:  # noqa: N802 (reads as the thing it builds)
    st = MemoryStorage()
    st.bootstrap(Config.of(ABC))
    return st.load()


def test_a_granted_vote_comes_out_with_the_hard_state_that_records_it() -> None:
    raft = Raft("n2", MemoryStorageState(), random.Random(0))
    raft.step(VoteRequest("n1", "n2", 2, 1, 1))
    rd = raft.ready()
    assert rd.hard_state == HardState(2, "n1", 1)
    assert rd.messages == [VoteResponse("n2", "n1", 2, True)]


def test_a_restarted_node_does_not_vote_twice_in_a_term() -> None:
    net = Net(ABC)
    n3 = net.raft("n3")
    n3.step(VoteRequest("n1", "n3", 2, 1, 1))
    net.flush("n3")
    net.crash("n3")
    net.restart("n3")
    n3 = net.raft("n3")
    assert (n3.term, n3.vote) == (2, "n1")
    n3.step(VoteRequest("n2", "n3", 2, 1, 1))
    rd = n3.ready()
    assert rd.messages == [VoteResponse("n3", "n2", 2, False)]
    n3.advance()


def test_a_restarted_node_applies_its_committed_entries_again() -> None:
    net = Net(ABC)
    net.elect("n1")
    for k in range(5):
        net.propose("n1", b"v%d" % k)
    net.tick("n1")
    net.deliver()
    digest = net.nodes["n2"].sm.digest
    net.crash("n2")
    net.restart("n2")
    assert net.nodes["n2"].sm.index == 7 and net.nodes["n2"].sm.digest == digest


def test_append_messages_carry_at_most_the_byte_budget_but_always_one_entry() -> None:
    """A follower catching up on big entries gets them in messages under the budget (one
    entry alone when it is bigger), so no message exceeds a receiver's frame limit."""
    opts = Options(max_bytes_per_msg=1000)
    net = Net(ABC, opts=opts)
    net.elect("n1")
    net.isolate("n3")
    for size in (400, 400, 400, 1500, 10, 10):
        net.propose("n1", b"x" * size)
    net.cut.clear()
    net.delivered.clear()
    net.tick_all(3)
    sent = [m for m in net.delivered if isinstance(m, AppendEntries) and m.dst == "n3"
            and m.entries]
    assert sent, "n3 was never caught up"
    for m in sent:
        data = sum(len(e.data) for e in m.entries)
        assert data <= 1000 or len(m.entries) == 1, [len(e.data) for e in m.entries]
    assert net.raft("n3").log.last_index == net.raft("n1").log.last_index
    assert any(len(m.entries) == 1 and len(m.entries[0].data) == 1500 for m in sent)
