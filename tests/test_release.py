"""The one-command version bump: core, every bundled plugin and the changelog move together."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import prosaas_core

ROOT = Path(__file__).resolve().parent.parent


def test_bump_version_moves_core_plugins_and_changelog_together(tmp_path):
    (tmp_path / "prosaas_core").mkdir()
    shutil.copy(ROOT / "prosaas_core" / "version.py", tmp_path / "prosaas_core")
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path)
    plugins = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/setup.cfg"))
    for name in plugins:
        (tmp_path / "plugins" / name).mkdir(parents=True)
        shutil.copy(ROOT / "plugins" / name / "setup.cfg", tmp_path / "plugins" / name)
    script = str(ROOT / "scripts" / "bump_version.py")
    run = [sys.executable, script, "--root", str(tmp_path)]

    proc = subprocess.run([*run, "7.4.0"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith(f"prosaas {prosaas_core.__version__} -> 7.4.0;")
    version = (tmp_path / "prosaas_core" / "version.py").read_text()
    assert '__version__ = "7.4.0"' in version
    assert f'CONTRACT_VERSION = "{prosaas_core.CONTRACT_VERSION}"' in version  # by hand only
    for name in plugins:
        cfg = (tmp_path / "plugins" / name / "setup.cfg").read_text()
        assert "\nversion = 7.4.0\n" in cfg and "\n    prosaas>=7.4.0,<7.5\n" in cfg
    changelog = (tmp_path / "CHANGELOG.md").read_text()
    assert changelog.index("## [Unreleased]") < changelog.index("## [7.4.0] - ")

    older = subprocess.run([*run, "7.3.9"], capture_output=True, text=True)
    assert older.returncode == 1 and older.stderr == "error: 7.3.9 is not newer than 7.4.0\n"
