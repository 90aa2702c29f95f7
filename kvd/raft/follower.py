"""What a follower does with its leader's AppendEntries and InstallSnapshot: pure functions
of its log, each returning the answer to send.

- An AppendEntries whose prev entry the log holds is appended (keeping what already matches,
  cutting a conflicting suffix) and answered with the index the logs now agree up to. One
  whose prev entry it lacks is rejected with a hint: the last entry at or below prev_index
  whose term is <= prev_term, so the leader skips every entry of a term that cannot match.
- Anything at or below the commit index is known to match: answered with the commit index.
- A snapshot is installed only when the log does not already hold its last entry; then it
  replaces the whole log.
"""

from __future__ import annotations

from kvd.raft.log import RaftLog
from kvd.raft.messages import AppendEntries, AppendResponse, InstallSnapshot


def on_append(log: RaftLog, m: AppendEntries) -> AppendResponse:
    if m.prev_index < log.committed:
        return AppendResponse(m.dst, m.src, m.term, log.committed)
    last = log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
    if last is not None:
        return AppendResponse(m.dst, m.src, m.term, last)
    hint, hint_term = log.find_conflict_by_term(min(m.prev_index, log.last_index), m.prev_term)
    return AppendResponse(m.dst, m.src, m.term, m.prev_index, True, hint, hint_term)


def on_snapshot(log: RaftLog, m: InstallSnapshot) -> tuple[AppendResponse, bool]:
    """The answer, and whether the snapshot replaced the log (the caller must then persist
    it and restore its state machine from it)."""
    s = m.snapshot
    if s.index <= log.committed:
        return AppendResponse(m.dst, m.src, m.term, log.committed), False
    if log.match_term(s.index, s.term):
        log.commit_to(s.index)  # the log already holds it: nothing to restore
        return AppendResponse(m.dst, m.src, m.term, log.committed), False
    log.restore(s)
    return AppendResponse(m.dst, m.src, m.term, log.last_index), True
