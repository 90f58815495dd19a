"""The distribution as a user gets it: what the sdist and the wheel hold, what their metadata
says, and a clean venv where `pip install .` gives a working client without the node's
packages (rocksdict, cryptography) or kvbench's (hdrh).

The project is built once per module (`python -m build`: the sdist, then the wheel from the
sdist, so a file the sdist lacks breaks the wheel), and installed once into a clean venv. That
install fetches the client's dependencies and the build's requirements from PyPI, pinned by
constraints.txt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import kvstore
from kvstore.extras import DISTRIBUTION, EXTRA_MODULES
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import free_ports

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
DIST = "kvstore-dynamo"
DIST_FILE = "kvstore_dynamo"  # the name as it appears in file names
VERSION = kvstore.__version__
SERVER_ONLY = ("rocksdict", "cryptography", "prometheus_client")
BENCH_ONLY = ("hdrh", "redis", "docker", "matplotlib")
BUILD_TIMEOUT_S = 600
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 60

# What a copy of the source tree leaves out: this checkout's build outputs and caches, so
# the build starts from sources alone (as from a fresh clone).
_NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "data",
    "*.egg-info",
    "*.so",
    "_native.c",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".build",
)


def _run(
    argv: Sequence[str | Path],
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    if check:
        assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _sources(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=_NOT_SOURCES)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it, with this venv's setuptools and Cython (the
    versions constraints.txt pins)."""
    work = tmp_path_factory.mktemp("build")
    out = work / "dist"
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", out, _sources(work / "src")],
        BUILD_TIMEOUT_S,
    )
    (sdist,) = out.glob(f"{DIST_FILE}-{VERSION}.tar.gz")
    (wheel,) = out.glob(f"{DIST_FILE}-{VERSION}-*.whl")
    return {"sdist": sdist, "wheel": wheel}


# What reaching PyPI may need here (a proxy, a mirror, a CA), and pip's cache.
_PASSED_ON = (
    "HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No trace of this venv or checkout: the clean venv imports only what it installed."""
    env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **(extra or {})}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv where `pip install .` ran (pip builds the extension with the build-system
    requirements from PyPI) with the client's dependencies only. Returns its bin/."""
    work = tmp_path_factory.mktemp("client-venv")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", venv], RUN_TIMEOUT_S)
    source = _sources(work / "src")
    _run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet",
         "-c", ROOT / "constraints.txt", "."],
        INSTALL_TIMEOUT_S,
        cwd=source,
        env=_clean_env(),
    )  # fmt: skip
    return venv / "bin"


def _in_venv(
    bin_dir: Path,
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    return _run([bin_dir / argv[0], *argv[1:]], RUN_TIMEOUT_S, cwd, _clean_env(env), check)


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{DIST_FILE}-{VERSION}.dist-info/METADATA").decode()
    return Parser().parsestr(text)


# --- the artifacts ------------------------------------------------------------------------


def test_the_wheel_holds_the_extension_the_license_and_the_type_marker(
    built: dict[str, Path],
) -> None:
    with zipfile.ZipFile(built["wheel"]) as archive:
        names = set(archive.namelist())
        license_text = archive.read(f"{DIST_FILE}-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert any(re.fullmatch(r"kvstore/_native\.cpython-[^/]+\.so", n) for n in names), names
    assert "kvstore/py.typed" in names
    assert "kvstore/_native.pyi" in names
    assert "kvstore/__main__.py" in names
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "Copyright 2026 the kvstore authors" in license_text
    # Build inputs stay in the sdist.
    assert not any(n.endswith((".pyx", ".pxd", ".c")) for n in names)


def test_the_wheel_metadata_names_the_distribution_version_license_and_extras(
    built: dict[str, Path],
) -> None:
    meta = _metadata(built["wheel"])
    assert meta["Name"] == DIST
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "Apache-2.0"
    assert set(meta.get_all("Provides-Extra") or []) == {"server", "bench", "chaos", "plot", "dev"}

    requires = meta.get_all("Requires-Dist") or []
    by_extra: dict[str, set[str]] = {}
    for requirement in requires:
        name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower()
        extra = re.search(r"extra == \"(\w+)\"", requirement)
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(name)
        # Ranges in the metadata; the exact versions live in constraints.txt.
        assert "==" not in requirement.split(";")[0], requirement
    assert by_extra[""] == {"grpcio", "grpcio-health-checking", "protobuf"}
    assert by_extra["server"] == {"rocksdict", "cryptography", "prometheus-client"}
    assert by_extra["bench"] == {"hdrhistogram", "redis"}
    assert by_extra["chaos"] == {"docker"}
    assert by_extra["plot"] == {"matplotlib"}
    assert {DIST} <= by_extra["dev"] and {"pytest", "mypy", "ruff"} <= by_extra["dev"]


def test_the_sdist_holds_what_the_build_needs(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    expected = {
        "LICENSE",
        "README.md",
        "constraints.txt",
        "pyproject.toml",
        "setup.py",
        "native/kvstore/_native.pyx",
        "native/kvstore/_native.pxd",
        "native/murmur3.h",
        "proto/kvstore.proto",
        "proto/generate.py",
        "kvstore/__init__.py",
        "kvstore/py.typed",
    }
    assert expected <= names, expected - names
    assert not any(n.endswith((".so", "_native.c")) for n in names)


def test_the_version_is_written_once() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kvstore.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_the_constraints_pin_every_dependency_in_its_range() -> None:
    """make setup installs with constraints.txt: it pins each dependency pyproject names,
    at a version inside pyproject's range."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project["optional-dependencies"]
    for text in project["dependencies"] + [r for group in extras.values() for r in group]:
        requirement = Requirement(text)
        if requirement.name == DIST:
            continue
        name = requirement.name.lower()
        assert name in pins, f"{name} has no pin in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (text, pins[name])


def test_the_extras_the_commands_ask_for_are_the_ones_pyproject_declares() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == DISTRIBUTION == DIST
    assert set(EXTRA_MODULES) <= set(project["optional-dependencies"])


# --- the project's venv -------------------------------------------------------------------


_BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        ([sys.executable, "-m", "kvstore"], "kvstore"),
        ([_BIN / "kvstore"], "kvstore"),
        ([_BIN / "kvbench"], "kvbench"),
        ([_BIN / "kvchaos"], "kvchaos"),
    ],
    ids=["python -m kvstore", "kvstore", "kvbench", "kvchaos"],
)
def test_every_command_prints_its_version(
    argv: list[str | Path], name: str, tmp_path: Path
) -> None:
    result = _run([*argv, "--version"], RUN_TIMEOUT_S, cwd=tmp_path)
    assert result.stdout == f"{name} {VERSION}\n"


# --- a clean venv: `pip install .` ------------------------------------------------------


def test_python_m_kvstore_prints_the_installed_version(client_venv: Path, tmp_path: Path) -> None:
    result = _in_venv(client_venv, ["python", "-m", "kvstore", "--version"], tmp_path)
    assert result.stdout == f"kvstore {VERSION}\n"
    script = _in_venv(client_venv, ["kvstore", "--version"], tmp_path)
    assert script.stdout == f"kvstore {VERSION}\n"


def test_the_node_packages_are_not_installed(client_venv: Path, tmp_path: Path) -> None:
    for module in ("rocksdict", "cryptography", "hdrh"):
        result = _in_venv(client_venv, ["python", "-c", f"import {module}"], tmp_path, check=False)
        assert result.returncode == 1
        assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr


_IMPORTS = """
import json, sys
import kvstore, kvstore._native
from kvstore import Client as FacadeClient
from kvstore.client import AsyncClient, Client
import kvstore.cli.main
assert FacadeClient is Client and AsyncClient.__module__ == "kvstore.client.aio"
print(json.dumps({
    "kvstore": kvstore.__file__,
    "native": kvstore._native.__file__,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:]),
}))
"""


def test_importing_the_client_loads_no_server_or_bench_package_even_when_installed(
    tmp_path: Path,
) -> None:
    """In this venv every extra is installed: importing the client must still load none of
    them (in the clean venv they are absent, so there an import would fail instead)."""
    result = _run(
        [sys.executable, "-c", _IMPORTS, *SERVER_ONLY, *BENCH_ONLY], RUN_TIMEOUT_S, cwd=tmp_path
    )
    # ... which are all installed here.
    _run([sys.executable, "-c", f"import {', '.join((*SERVER_ONLY, *BENCH_ONLY))}"],
         RUN_TIMEOUT_S, cwd=tmp_path)  # fmt: skip
    assert json.loads(result.stdout)["loaded"] == []


def test_importing_the_client_loads_no_server_or_bench_package(
    client_venv: Path, tmp_path: Path
) -> None:
    result = _in_venv(client_venv, ["python", "-c", _IMPORTS, *SERVER_ONLY, *BENCH_ONLY], tmp_path)
    seen = json.loads(result.stdout)
    venv = client_venv.parent
    # The installed package (and its compiled extension), not this checkout's.
    assert Path(seen["kvstore"]).is_relative_to(venv), seen
    assert Path(seen["native"]).is_relative_to(venv) and seen["native"].endswith(".so"), seen
    assert seen["loaded"] == []


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["kvstore", "serve"], "server"),
        (["kvstore", "local", "--nodes", "1", "--data-dir", "x"], "server"),
        (["kvstore", "certs", "--dir", "x"], "server"),
        (["kvchaos", "run", "--backend", "local", "--data-dir", "x"], "server"),
        (["kvbench", "load", "--records", "10"], "bench"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]),
)
def test_a_command_names_the_extra_it_needs(
    client_venv: Path, tmp_path: Path, argv: list[str], extra: str
) -> None:
    result = _in_venv(client_venv, argv, tmp_path, check=False)
    assert result.returncode == 2
    assert f"pip install '{DIST}[{extra}]'" in result.stderr
    for module in EXTRA_MODULES[extra]:
        assert module in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was made


def test_every_command_prints_its_version_without_the_extras(
    client_venv: Path, tmp_path: Path
) -> None:
    for command in ("kvbench", "kvchaos"):
        result = _in_venv(client_venv, [command, "--version"], tmp_path)
        assert result.stdout == f"{command} {VERSION}\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[LocalCluster]:
    """One secure node (TLS, certificates and tokens), started from this project's venv."""
    with LocalCluster(
        1,
        tmp_path_factory.mktemp("node"),
        ports=free_ports(1),
        extra_args=("--n", "1", "--r", "1", "--w", "1"),
        tls_dir=tls_dir,
    ) as cluster:
        cluster.start()
        yield cluster


_ROUND_TRIP = """
import sys
from kvstore.client import Client
with Client(sys.argv[1], timeout=10.0) as kv:  # TLS and token from KVSTORE_TLS_*, KVSTORE_TOKEN
    kv.put("packaging-key", b"from a clean venv")
    result = kv.get("packaging-key")
    assert result.values == [b"from a clean venv"], result.values
loaded = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2:])
print("ok", loaded)
"""


def test_the_clean_venv_client_writes_and_reads_a_real_node(
    client_venv: Path, node: LocalCluster, tmp_path: Path
) -> None:
    credentials = node.client_credentials()
    assert credentials, "the node runs secure"
    result = _in_venv(
        client_venv,
        ["python", "-c", _ROUND_TRIP, node.seeds, *SERVER_ONLY, *BENCH_ONLY],
        tmp_path,
        env=credentials,
    )
    assert result.stdout == "ok []\n"
    # ... and its `kvstore` command reads the key back.
    got = _in_venv(
        client_venv, ["kvstore", "get", "packaging-key", "--seeds", node.seeds], tmp_path,
        env=credentials,
    )  # fmt: skip
    assert got.stdout.splitlines()[0] == "from a clean venv"
