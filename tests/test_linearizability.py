"""The linearizability checker (tests/linearizability.py) on histories whose verdict is known:
the classic examples by hand, and generated ones — a real sequential run spread over
overlapping intervals is linearizable, and one with a provably impossible result is not."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.linearizability import Model, Op, Verdict, check, from_events, lock, register


def op(client: str, call: float, ret: float | None, name: str, *args: Any,
       result: Any = None) -> Op:
    return Op(client, call, ret, name, args, result)


def assert_witness(history: list[Op], verdict: Verdict, model: Model) -> None:
    """The verdict's order is one: real time respected, every op accepted, none invented."""
    assert verdict.ok, verdict.explain()
    for ops in verdict.orders.values():
        assert all(o in history for o in ops)
        state = model.init
        for n, o in enumerate(ops):
            assert all(later.ret is None or later.ret >= o.call for later in ops[n + 1:])
            ok, state = model.step(state, o)
            assert ok, o
    taken = [id(o) for o in verdict.order]
    assert len(taken) == len(set(taken))
    assert {id(o) for o in history if not o.pending} <= set(taken)


# -- registers ----------------------------------------------------------------------------------


def test_a_read_after_a_completed_write_must_see_it() -> None:
    history = [op("a", 0, 1, "write", "x", 1), op("b", 2, 3, "read", "x", result=None)]
    verdict = check(history, register)
    assert not verdict
    assert verdict.part == "x" and verdict.prefix == history
    assert "not linearizable" in verdict.explain()


def test_a_read_overlapping_a_write_may_see_either_value() -> None:
    for seen in (None, 1):
        history = [op("a", 0, 10, "write", "x", 1), op("b", 2, 3, "read", "x", result=seen)]
        assert_witness(history, check(history, register), register)


def test_once_a_read_saw_the_new_value_no_later_read_sees_the_old() -> None:
    history = [op("a", 0, 10, "write", "x", 1),
               op("b", 1, 2, "read", "x", result=1),
               op("c", 3, 4, "read", "x", result=None)]
    assert not check(history, register)
    history[2] = op("c", 1.5, 4, "read", "x", result=None)  # overlaps b: c may come first
    assert check(history, register)


def test_compare_and_set_chain_has_exactly_one_order() -> None:
    history = [op("c", 0, 10, "cas", "x", 2, 3, result=True),
               op("a", 0, 10, "cas", "x", None, 1, result=True),
               op("b", 0, 10, "cas", "x", 1, 2, result=True),
               op("d", 11, 12, "read", "x", result=3)]
    verdict = check(history, register)
    assert [o.client for o in verdict.order] == ["a", "b", "c", "d"]
    assert_witness(history, verdict, register)


def test_two_creates_of_one_key_cannot_both_succeed() -> None:
    history = [op("a", 0, 10, "cas", "x", None, 1, result=True),
               op("b", 0, 10, "cas", "x", None, 2, result=True)]
    assert not check(history, register)
    history[1] = op("b", 0, 10, "cas", "x", None, 2, result=False)
    assert check(history, register)


def test_an_acknowledged_write_that_is_lost_is_caught() -> None:
    history = [op("a", 0, 1, "write", "x", 1), op("b", 2, 3, "write", "x", 2),
               op("c", 4, 5, "read", "x", result=1), op("d", 6, 7, "read", "x", result=1)]
    verdict = check(history, register)
    assert not verdict
    assert verdict.prefix == history[:3]  # the later read adds nothing to the story
    assert verdict.culprit == history[2]
    assert [o.client for o in verdict.partial] == ["a", "b"]


def test_keys_are_checked_apart_and_the_failing_one_is_named() -> None:
    history = [op("a", 0, 5, "write", "x", 1), op("b", 0, 5, "write", "y", 1),
               op("c", 6, 7, "read", "x", result=1), op("d", 6, 7, "read", "y", result=2)]
    verdict = check(history, register)
    assert not verdict and verdict.part == "y"
    assert check(history[:3], register).orders.keys() == {"x", "y"}


# -- ops that never returned --------------------------------------------------------------------


def test_a_pending_write_that_was_read_took_effect() -> None:
    history = [op("a", 0, None, "write", "x", 1), op("b", 5, 6, "read", "x", result=1)]
    verdict = check(history, register)
    assert [o.client for o in verdict.order] == ["a", "b"]
    history.insert(1, op("c", 3, 4, "read", "x", result=None))  # not yet, then yes: fine
    assert check(history, register)


def test_a_pending_write_never_seen_may_never_have_happened() -> None:
    history = [op("a", 0, None, "write", "x", 1),
               op("b", 5, 6, "cas", "x", None, 2, result=True),
               op("c", 7, 8, "read", "x", result=2)]
    verdict = check(history, register)
    assert_witness(history, verdict, register)
    assert [o.client for o in verdict.order][:2] == ["b", "c"]  # a, if at all, after them


def test_a_pending_write_cannot_be_undone_once_seen() -> None:
    history = [op("a", 0, None, "write", "x", 1), op("b", 5, 6, "read", "x", result=1),
               op("c", 7, 8, "read", "x", result=None)]
    assert not check(history, register)


def test_a_pending_op_cannot_take_effect_before_it_was_called() -> None:
    history = [op("b", 0, 1, "read", "x", result=1), op("a", 2, None, "write", "x", 1)]
    assert not check(history, register)


def test_events_become_ops_with_positions_as_times() -> None:
    events = [("call", "a", "write", ("x", 1)), ("call", "b", "read", ("x",)),
              ("return", "b", 1), ("call", "c", "read", ("x",)), ("return", "c", None),
              ("call", "d", "write", ("x", 2))]
    history = from_events(events)
    assert history == [Op("a", 0, None, "write", ("x", 1)), Op("b", 1, 2, "read", ("x",), 1),
                       Op("c", 3, 4, "read", ("x",), None), Op("d", 5, None, "write", ("x", 2))]
    assert not check(history, register)  # b saw a's write: c, after b, cannot miss it
    with pytest.raises(ValueError):
        from_events([("return", "a", 1)])
    with pytest.raises(ValueError):
        from_events([("call", "a", "read", ("x",)), ("call", "a", "read", ("x",))])


# -- locks ------------------------------------------------------------------------------------


def test_two_holders_at_once_is_not_a_lock() -> None:
    history = [op("a", 0, 1, "lock", "L", "a", result=5), op("b", 2, 3, "lock", "L", "b", result=6),
               op("a", 4, 5, "unlock", "L", "a", result=True)]
    assert not check(history, lock)
    history[2] = op("a", 1.5, 5, "unlock", "L", "a", result=True)  # released as b asked
    assert_witness(history, check(history, lock), lock)


def test_fencing_tokens_never_go_backwards() -> None:
    history = [op("a", 0, 1, "lock", "L", "a", result=10),
               op("a", 2, 3, "unlock", "L", "a", result=True),
               op("b", 4, 5, "lock", "L", "b", result=7)]
    assert not check(history, lock)
    history[2] = op("b", 4, 5, "lock", "L", "b", result=11)
    assert check(history, lock)


def test_a_holder_taking_its_lock_again_gets_the_same_token() -> None:
    history = [op("a", 0, 1, "lock", "L", "a", result=3), op("a", 2, 3, "lock", "L", "a", result=3),
               op("b", 4, 5, "lock", "L", "b", result=None)]
    assert check(history, lock)
    history[1] = op("a", 2, 3, "lock", "L", "a", result=4)
    assert not check(history, lock)


def test_a_pending_acquisition_may_hold_the_lock() -> None:
    history = [op("a", 0, None, "lock", "L", "a"),
               op("b", 2, 3, "lock", "L", "b", result=None)]  # only a can be holding it
    assert [o.client for o in check(history, lock).order] == ["a", "b"]
    history.append(op("b", 4, 5, "lock", "L", "b", result=8))  # ... and then a never got it
    assert not check(history, lock)


# -- generated histories ------------------------------------------------------------------------


def run_register(ops: list[tuple]) -> list[Any]:
    values: dict[str, Any] = {}
    results = []
    for name, key, *args in ops:
        current = values.get(key)
        if name == "write":
            values[key] = args[0]
        elif name == "cas" and current == args[0]:
            values[key] = args[1]
        results.append(current if name == "read" else
                       current == args[0] if name == "cas" else None)
    return results


def run_lock(ops: list[tuple], gaps: list[int]) -> list[Any]:
    """A lock whose tokens grow with gaps, as Raft indexes do."""
    holder, token, issued, results = None, 0, 0, []
    for (name, _, owner), gap in zip(ops, gaps, strict=True):
        if name == "lock" and holder is None:
            issued += gap
            holder, token = owner, issued
        if name == "lock":
            results.append(token if holder == owner else None)
        else:
            results.append(holder == owner)
            holder = None if holder == owner else holder
    return results


register_ops = st.one_of(
    st.tuples(st.just("read"), st.sampled_from("xy")),
    st.tuples(st.just("write"), st.sampled_from("xy"), st.integers(1, 3)),
    st.tuples(st.just("cas"), st.sampled_from("xy"), st.sampled_from([None, 1, 2, 3]),
              st.integers(1, 3)))
lock_ops = st.tuples(st.sampled_from(["lock", "unlock"]), st.just("L"), st.sampled_from("abc"))


@st.composite
def spread(draw: st.DrawFn, ops: list[tuple], results: list[Any]) -> list[Op]:
    """Op i takes effect at 10*i within an interval of its own, maybe never returning; a few
    extra ops that never returned never took effect at all."""
    history = []
    for i, (o, result) in enumerate(zip(ops, results, strict=True)):
        call, ret = 10 * i - draw(st.integers(0, 25)), 10 * i + draw(st.integers(0, 25))
        pending = draw(st.integers(0, 9)) == 0
        history.append(Op(i, call, None if pending else ret, o[0], o[1:], result))
    for o in draw(st.lists(st.sampled_from(ops), max_size=2)):
        history.append(Op("lost", draw(st.integers(-20, 10 * len(ops))), None, o[0], o[1:]))
    return history


@settings(max_examples=150, deadline=None)
@given(st.data(), st.lists(register_ops, min_size=1, max_size=20))
def test_a_real_register_run_is_linearizable(data: st.DataObject, ops: list[tuple]) -> None:
    history = data.draw(spread(ops, run_register(ops)))
    assert_witness(history, check(history, register), register)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.lists(lock_ops, max_size=20))
def test_a_real_lock_run_is_linearizable(data: st.DataObject, ops: list[tuple]) -> None:
    ops = [("lock", "L", "a"), ("unlock", "L", "a"), ("lock", "L", "b"), *ops]
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=len(ops), max_size=len(ops)))
    history = data.draw(spread(ops, run_lock(ops, gaps)))
    assert_witness(history, check(history, lock), lock)


@settings(max_examples=100, deadline=None)
@given(st.data(), st.lists(register_ops, max_size=15))
def test_a_read_of_a_value_never_written_is_caught(data: st.DataObject, ops: list[tuple]) -> None:
    ops = [*ops, ("read", "x")]
    history = data.draw(spread(ops, run_register(ops)))
    reads = [n for n, o in enumerate(history) if o.name == "read" and not o.pending]
    history[reads[-1] if reads else -1] = Op("liar", 0, 10**6, "read", ("x",), 99)
    verdict = check(history, register)
    assert not verdict and verdict.culprit.client == "liar"  # type: ignore[union-attr]


@settings(max_examples=100, deadline=None)
@given(st.data(), st.lists(lock_ops, max_size=15))
def test_one_token_for_two_owners_is_caught(data: st.DataObject, ops: list[tuple]) -> None:
    ops = [("lock", "L", "a"), ("unlock", "L", "a"), ("lock", "L", "b"), *ops]
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=len(ops), max_size=len(ops)))
    history = data.draw(spread(ops, run_lock(ops, gaps)))
    history[:3] = [Op(o.client, o.call, o.call + 25 if o.pending else o.ret, o.name, o.args,
                      o.result) for o in history[:3]]  # these returned: their tokens are known
    victim = data.draw(st.sampled_from([o for o in history if o.name == "lock" and not
                                        o.pending and o.result and o.args[1] != "a"]))
    history[history.index(victim)] = Op(victim.client, victim.call, victim.ret, "lock",
                                        victim.args, history[0].result)
    assert not check(history, lock)


def brute_force(history: list[Op], model: Model) -> bool:
    """Every order of the ops that returned and any of the others, tried one by one."""
    done = [o for o in history if not o.pending]
    pending = [o for o in history if o.pending]
    for mask in range(2 ** len(pending)):
        chosen = done + [o for n, o in enumerate(pending) if mask >> n & 1]
        for order in permutations(chosen):
            if any(b.ret is not None and b.ret < a.call
                   for n, a in enumerate(order) for b in order[n + 1:]):
                continue
            state, ok = model.init, True
            for o in order:
                ok, state = model.step(state, o)
                if not ok:
                    break
            if ok:
                return True
    return False


@st.composite
def any_history(draw: st.DrawFn, ops: st.SearchStrategy, results: st.SearchStrategy) -> list[Op]:
    """Small histories with made-up results, so some are linearizable and some are not; times
    from a narrow range, so ties are common."""
    history = []
    for n in range(draw(st.integers(1, 6))):
        call = draw(st.integers(0, 8))
        ret = None if draw(st.integers(0, 4)) == 0 else call + draw(st.integers(0, 4))
        o = draw(ops)
        history.append(Op(n, call, ret, o[0], o[1:], draw(results)))
    return history


@settings(max_examples=300, deadline=None)
@given(any_history(register_ops.filter(lambda o: o[1] == "x"),
                   st.sampled_from([None, 1, 2, True, False])))
def test_the_search_agrees_with_trying_every_order_on_a_register(history: list[Op]) -> None:
    assert bool(check(history, register)) == brute_force(history, register)


@settings(max_examples=300, deadline=None)
@given(any_history(lock_ops, st.sampled_from([None, 1, 2, 3, True, False])))
def test_the_search_agrees_with_trying_every_order_on_a_lock(history: list[Op]) -> None:
    assert bool(check(history, lock)) == brute_force(history, lock)
