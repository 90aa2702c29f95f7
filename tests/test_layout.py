"""The layout holds: imports point one way and no module imports itself through others.

Read from the source with `ast` (nothing is imported), every import counts: at the top, inside
a function, under `if TYPE_CHECKING`. The direction, from the top down (kvd/__init__.py says
the same in words):

    process life (kvd.cli, kvd.config, kvd.daemon, kvd.usercli, kvd.raftcli)
    -> kvd.loop
    -> kvd.doors | kvd.cluster | kvd.raft | kvd.log | kvd.bench
                                                        (siblings: none imports another)
    -> kvd.state
    -> shared (and the `kvd` package root, which holds only the version)

kvsh may import kvsh and shared, never kvd; shared imports only shared.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kvd", "kvsh", "shared")

# (group, rank): a module may import a lower rank, or its own group.
LAYERS = {
    "shared": ("shared", 0),
    "kvd": ("kvd root", 0),
    "kvd.state": ("kvd.state", 1),
    "kvd.doors": ("kvd.doors", 2),
    "kvd.cluster": ("kvd.cluster", 2),
    "kvd.raft": ("kvd.raft", 2),
    "kvd.log": ("kvd.log", 2),
    "kvd.bench": ("kvd.bench", 2),
    "kvd.loop": ("kvd.loop", 3),
    "kvd.consensus": ("kvd.loop", 3),
    "kvd.cli": ("process life", 4),
    "kvd.config": ("process life", 4),
    "kvd.daemon": ("process life", 4),
    "kvd.usercli": ("process life", 4),
    "kvd.raftcli": ("process life", 4),
    "kvd.__main__": ("process life", 4),
}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under `root`, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports: `from a import b` counts a.b when it is a module,
    and a itself when some name is not."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            out.update(n for n in names if n in known)
            if node.module in known and not all(n in known for n in names):
                out.add(node.module)
    return out


def graph(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    known = modules(root)
    return known, {name: imports(path, known) - {name} for name, path in known.items()}


def layer(module: str) -> tuple[str, int] | None:
    """The group and rank of a kvd or shared module (None for kvsh, which has its own rule)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        hit = LAYERS.get(".".join(parts[:n]))
        if hit is not None:
            return hit
    return None


def direction_errors(root: Path) -> list[str]:
    known, edges = graph(root)
    errors = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            why = _forbidden(a, b)
            if why:
                errors.append(f"{_rel(known[a], root)} imports {_rel(known[b], root)}: {why}")
    return errors


def _forbidden(a: str, b: str) -> str | None:
    top_a, top_b = a.split(".")[0], b.split(".")[0]
    if top_a == "kvsh":
        return None if top_b in ("kvsh", "shared") else "the shell imports only kvsh and shared"
    if top_b == "kvsh":
        return "only the shell imports kvsh (the client users import lives in shared.client)"
    la, lb = layer(a), layer(b)
    if la is None or lb is None:
        return f"{a if la is None else b} is in no layer: add it to LAYERS in tests/test_layout.py"
    if la[0] == lb[0] or lb[1] < la[1]:
        return None
    if lb[1] == la[1]:
        return f"{la[0]} and {lb[0]} are siblings: neither imports the other"
    return f"{la[0]} sits below {lb[0]}: imports point down (see kvd/__init__.py)"


def cycles(root: Path) -> list[list[str]]:
    """Each strongly connected group of modules with more than one member (Tarjan)."""
    _, edges = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def cycle_errors(root: Path) -> list[str]:
    known, edges = graph(root)
    errors = []
    for group in cycles(root):
        members = set(group)
        pairs = [f"{_rel(known[a], root)} -> {_rel(known[b], root)}"
                 for a in group for b in sorted(edges[a] & members)]
        errors.append("import cycle: " + ", ".join(pairs))
    return errors


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


# -- the project ------------------------------------------------------------------------------


def test_every_import_points_down_the_layers() -> None:
    errors = direction_errors(ROOT)
    assert not errors, "\n".join(errors)


def test_no_module_imports_itself_through_others() -> None:
    errors = cycle_errors(ROOT)
    assert not errors, "\n".join(errors)


def test_every_kvd_module_is_in_a_layer() -> None:
    unplaced = [m for m in modules(ROOT) if m.startswith("kvd") and layer(m) is None]
    assert not unplaced


# -- the checks themselves, on a small tree that breaks each rule ---------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


def test_the_checks_name_both_files_of_each_wrong_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "kvd/state/__init__.py": "",
        "kvd/state/node.py": "from kvd.state import handlers\n",
        "kvd/state/handlers.py": ("from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from kvd.state.node import Node\n"),
        "kvd/log/__init__.py": "",
        "kvd/log/wal.py": "def f():\n    from kvd.cluster import peers\n",
        "kvd/cluster/__init__.py": "",
        "kvd/cluster/peers.py": "import kvd.loop\n",
        "kvd/loop.py": "from kvd.state.node import Node\n",
        "kvd/daemon.py": "from kvsh.client import Client\n",
        "kvsh/client.py": "from shared import codec\n",
        "shared/codec.py": "from kvd.state.node import Node\n",
    })
    assert direction_errors(root) == [
        "kvd/cluster/peers.py imports kvd/loop.py: kvd.cluster sits below kvd.loop: imports "
        "point down (see kvd/__init__.py)",
        "kvd/daemon.py imports kvsh/client.py: only the shell imports kvsh (the client users "
        "import lives in shared.client)",
        "kvd/log/wal.py imports kvd/cluster/peers.py: kvd.log and kvd.cluster are siblings: "
        "neither imports the other",
        "shared/codec.py imports kvd/state/node.py: shared sits below kvd.state: imports point "
        "down (see kvd/__init__.py)",
    ]
    assert cycle_errors(root) == [
        "import cycle: kvd/state/handlers.py -> kvd/state/node.py, "
        "kvd/state/node.py -> kvd/state/handlers.py"
    ]


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "kvd/state/__init__.py": "",
        "kvd/state/node.py": "from shared import codec\nimport kvd\n",
        "kvd/loop.py": "from kvd.state.node import Node\n",
        "kvd/daemon.py": "from kvd.loop import Loop\nfrom shared.client import Client\n",
        "shared/codec.py": "", "shared/client.py": "from shared import codec\n",
        "kvsh/cli.py": "from shared.client import Client\n",
    })
    assert direction_errors(root) == [] and cycle_errors(root) == []
