"""`prosaas --help` stays fast with every plugin installed: no heavy library is imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "flask", "rq", "pydantic", "alembic", "redis", "twilio", "requests")

PROBE = f"""
import sys
from prosaas_core.cli.main import main
sys.argv = ["prosaas", "--help"]
try:
    main()
except SystemExit:
    pass
print("LOADED", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_help_imports_no_heavy_library_with_every_plugin_installed():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "acme-hello" in out  # plugin commands are listed, so plugins were loaded
    assert out.strip().splitlines()[-1] == "LOADED []"
