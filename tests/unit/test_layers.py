"""The import-layering contract (tools/check_layers.py): layers point one way."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_checker() -> ModuleType:
    name = "check_layers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


checker = _load_checker()

# A small package shaped like kvstore: errors < core < storage | config < client.
LAYERS = [["pkg.errors"], ["pkg.core"], ["pkg.storage", "pkg.config"], ["pkg.client"]]

CLEAN = {
    "__init__.py": """
        '''The facade: lazy, as kvstore's is.'''
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from pkg.client import Client

        def __getattr__(name):
            if name == "Client":
                from pkg.client import Client
                return Client
            raise AttributeError(name)
        """,
    "errors.py": "class E(Exception): ...\n",
    "core/__init__.py": "",
    "core/a.py": """
        from pkg.errors import E
        from . import b
        from .b import helper
        """,
    "core/b.py": "def helper(): ...\n",
    "storage/__init__.py": "",
    "storage/s.py": """
        from pkg import errors
        from pkg.core.a import E
        import pkg.core.b
        """,
    "config.py": "from pkg.core import a\n",
    "client/__init__.py": """
        from pkg.client.impl import Client
        """,
    "client/impl.py": """
        from pkg.config import a
        from pkg.storage.s import E

        class Client: ...
        """,
}


def make_package(root: Path, changes: dict[str, str], name: str = "pkg") -> Path:
    package = root / name
    for rel, source in {**CLEAN, **changes}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return package


def violations(tmp_path: Path, changes: dict[str, str]) -> list[object]:
    found: list[object] = checker.check(make_package(tmp_path, changes), LAYERS)
    return found


def only(found: list[object], kind: str, module: str, target: str) -> object:
    matching = [
        v
        for v in found
        if v.kind == kind and v.module == module and v.target == target  # type: ignore[attr-defined]
    ]
    assert matching, "\n".join(str(v) for v in found) or "no violations"
    return matching[0]


# --- (a) the real tree -------------------------------------------------------------------


def test_the_real_tree_points_one_way() -> None:
    found = checker.check(REPO / "kvstore", checker.LAYERS)
    assert found == [], "\n".join(str(v) for v in found)


def test_grpc_and_rocksdb_stay_in_their_layers() -> None:
    found = checker.check_confined(REPO / "kvstore")
    assert found == [], "\n".join(str(v) for v in found)


def test_grpc_above_the_transport_seam_fails(tmp_path: Path) -> None:
    package = tmp_path / "kvstore"
    (package / "node").mkdir(parents=True)
    (package / "rpc").mkdir()
    for init in ("__init__.py", "node/__init__.py", "rpc/__init__.py"):
        (package / init).write_text("")
    (package / "rpc" / "peer.py").write_text("import grpc\n")
    (package / "node" / "roles.py").write_text("def f():\n    from grpc import aio\n")
    found = checker.check_confined(package)
    assert [(v.kind, v.module, v.target) for v in found] == [
        ("confined", "kvstore.node.roles", "grpc")
    ]
    assert "kvstore/node/roles.py:2" in str(found[0])


# --- (b) synthetic packages --------------------------------------------------------------


def test_a_clean_package_passes(tmp_path: Path) -> None:
    assert violations(tmp_path, {}) == []


def test_a_direct_up_import_fails(tmp_path: Path) -> None:
    found = violations(tmp_path, {"core/b.py": "from pkg.storage.s import E\n"})
    violation = only(found, "direct", "pkg.core.b", "pkg.storage.s")
    assert "pkg/core/b.py:1" in str(violation)


def test_an_up_import_only_under_type_checking_fails(tmp_path: Path) -> None:
    source = """
        from __future__ import annotations

        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from pkg.client import Client

        def helper(client: Client) -> None: ...
        """
    found = violations(tmp_path, {"core/b.py": source})
    violation = only(found, "type-only", "pkg.core.b", "pkg.client")
    assert "pkg/core/b.py:6" in str(violation)
    assert [v for v in found if v.kind == "transitive"] == []  # type: ignore[attr-defined]


def test_an_up_import_through_a_package_init_fails(tmp_path: Path) -> None:
    eager = "from pkg.client import Client\n"
    found = violations(tmp_path, {"__init__.py": eager, "core/b.py": "from pkg import errors\n"})
    only(found, "facade", "pkg", "pkg.client")
    violation = only(found, "transitive", "pkg.core.b", "pkg.client")
    chain = violation.chain  # type: ignore[attr-defined]
    assert chain[0] == "pkg.core.b"
    assert "pkg (package __init__)" in chain
    assert chain[-1] == "pkg.client"
    # pkg.errors imports nothing, yet importing it loads the client: the init runs first.
    only(found, "transitive", "pkg.errors", "pkg.client")


def test_an_up_import_inside_a_function_fails(tmp_path: Path) -> None:
    source = """
        def connect():
            from pkg.client import Client
            return Client()
        """
    found = violations(tmp_path, {"core/b.py": source})
    violation = only(found, "direct", "pkg.core.b", "pkg.client")
    assert "inside a function" in str(violation)


def test_a_relative_up_import_fails(tmp_path: Path) -> None:
    found = violations(tmp_path, {"core/b.py": "from ..storage import s\n"})
    only(found, "direct", "pkg.core.b", "pkg.storage.s")


def test_a_sibling_group_import_fails(tmp_path: Path) -> None:
    found = violations(tmp_path, {"storage/s.py": "from pkg.config import a\n"})
    only(found, "direct", "pkg.storage.s", "pkg.config")


def test_an_up_import_two_hops_away_is_reported_with_its_chain(tmp_path: Path) -> None:
    # core.b -> core.c (same group) -> client: core.b loads the client without naming it.
    changes = {"core/b.py": "from pkg.core import c\n", "core/c.py": "import pkg.client\n"}
    found = violations(tmp_path, changes)
    only(found, "direct", "pkg.core.c", "pkg.client")
    violation = only(found, "transitive", "pkg.core.b", "pkg.client")
    assert violation.chain == ("pkg.core.b", "pkg.core.c", "pkg.client")  # type: ignore[attr-defined]


def test_a_name_the_facade_re_exports_counts_as_its_source(tmp_path: Path) -> None:
    # `from pkg import Client` loads pkg.client through the lazy __getattr__.
    found = violations(tmp_path, {"core/b.py": "from pkg import Client\n"})
    only(found, "direct", "pkg.core.b", "pkg.client")


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "kvstore"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "ring.py").write_text("from kvstore.errors import X\n")
    assert checker.main([str(package)]) == 0
    assert "4 modules" in capsys.readouterr().out
    (package / "errors.py").write_text("from kvstore.core import ring\n")
    assert checker.main([str(package)]) == 1
    assert "kvstore.errors" in capsys.readouterr().out


# --- (c) at runtime ----------------------------------------------------------------------


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_core_loads_no_client_rpc_node_or_grpc() -> None:
    out = _run(
        "import sys\n"
        "import kvstore.core.coordinator\n"
        "prefixes = ('kvstore.client', 'kvstore.rpc', 'kvstore.node', 'grpc')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'\n"
        "             or any(m == p or m.startswith(p + '.') for p in prefixes)))\n"
    )
    assert out.strip() == "[]"


def test_the_public_surface_still_works() -> None:
    out = _run(
        "import kvstore\n"
        "from kvstore import TLS, AsyncClient, Client, GetResult, PutItem, PutResult, errors\n"
        "assert kvstore.__all__ == ['TLS', 'AsyncClient', 'Client', 'GetResult', 'PutItem',"
        " 'PutResult', 'errors']\n"
        "from importlib.metadata import version\n"
        "assert kvstore.__version__ == version('kvstore-dynamo')\n"
        "assert errors is kvstore.errors and issubclass(errors.KvError, Exception)\n"
        "assert Client is kvstore.Client and Client.__module__ == 'kvstore.client.sync'\n"
        "assert set(kvstore.__all__) <= set(dir(kvstore))\n"
        "print('ok')\n"
    )
    assert out.strip() == "ok"
