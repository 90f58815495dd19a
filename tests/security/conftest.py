from __future__ import annotations

import pytest

# Real node processes, like tests/integration: the security tier runs them under faults.
pytestmark = pytest.mark.integration
