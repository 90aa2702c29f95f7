from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import Kvd


@pytest.fixture
def kvd_factory(tmp_path: Path) -> Iterator[Callable[..., Kvd]]:
    """Start kvd nodes on free ports; every one is stopped when the test ends, pass or fail."""
    started: list[Kvd] = []

    def make(name: str = "n1", extra: list[str] | None = None, start: bool = True,
             **kw: object) -> Kvd:
        node = Kvd(tmp_path, name, extra, **kw)  # type: ignore[arg-type]
        started.append(node)
        return node.start() if start else node

    yield make
    for node in started:
        try:
            node.stop()
        finally:
            node.kill()


@pytest.fixture
def kvd(kvd_factory: Callable[..., Kvd]) -> Kvd:
    return kvd_factory("n1")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Each phase's report on the item (`item.report_call`), for fixtures that keep evidence
    of a failure in their teardown (the console tests' screenshots)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
