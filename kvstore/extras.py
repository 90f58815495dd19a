"""What the optional parts of kvstore need beyond the client, and how to ask for them.

`pip install kvstore-dynamo` installs the client only; the node, kvbench and kvchaos's
docker backend come with extras. A command that needs an extra checks for it before it
starts, so a missing package reads as the line that installs it, not as a traceback.
"""

from __future__ import annotations

from importlib.util import find_spec

DISTRIBUTION = "kvstore-dynamo"

# The modules an extra's packages provide, as they are imported. Checked without importing
# them (find_spec), so a check loads nothing.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": ("rocksdict", "cryptography", "prometheus_client"),
    "bench": ("hdrh",),
}


def missing_extra(extra: str) -> str | None:
    """None when `extra` is installed, else what to tell the user: what is missing and how
    to install it."""
    missing = [name for name in EXTRA_MODULES[extra] if find_spec(name) is None]
    if not missing:
        return None
    return (
        f"needs the [{extra}] extra ({', '.join(missing)} missing):"
        f" pip install '{DISTRIBUTION}[{extra}]'"
    )
