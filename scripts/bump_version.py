"""Bump the release version of the core and every bundled plugin in one command.

    python scripts/bump_version.py 0.2.0

Writes ``__version__`` in ``prosaas_core/version.py`` (the core's ``setup.cfg`` reads it), the
``version`` of every ``plugins/*/setup.cfg`` and their ``prosaas>=X,<Y`` requirement (this
release up to the next minor: bundled plugins are released with the core), and opens the
release's section in ``CHANGELOG.md`` from ``[Unreleased]``. ``CONTRACT_VERSION`` is not
touched: it changes only when the plugin contract does (see docs/hooks.md), by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent


def next_minor(v: Version) -> str:
    return f"{v.major}.{v.minor + 1}"


def bump_setup_cfg(path: Path, new: Version) -> None:
    text = path.read_text()
    text, n = re.subn(r"(?m)^version = .*$", f"version = {new}", text, count=1)
    if n != 1:
        raise SystemExit(f"error: {path}: no 'version = ' line")
    text, n = re.subn(
        r"(?m)^(\s+)prosaas(?:[<>=!~][^\n]*)?$", rf"\g<1>prosaas>={new},<{next_minor(new)}", text
    )
    if n != 1:
        raise SystemExit(f"error: {path}: no single 'prosaas' requirement in install_requires")
    path.write_text(text)


def bump_changelog(changelog: Path, new: Version) -> None:
    text = changelog.read_text()
    if f"## [{new}]" in text:
        return
    today = datetime.now(UTC).date().isoformat()
    head = "## [Unreleased]\n"
    if head not in text:
        raise SystemExit(f"error: {changelog}: no '## [Unreleased]' section")
    changelog.write_text(text.replace(head, f"{head}\n## [{new}] - {today}\n", 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the new release version, e.g. 0.2.0")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    args = parser.parse_args(argv)
    version_file = args.root / "prosaas_core" / "version.py"
    try:
        new = Version(args.version)
    except InvalidVersion:
        print(f"error: {args.version!r} is not a version (e.g. 0.2.0)", file=sys.stderr)
        return 1
    text = version_file.read_text()
    old = re.search(r'(?m)^__version__ = "([^"]+)"$', text)
    if old is None:
        print(f"error: {version_file}: no __version__ line", file=sys.stderr)
        return 1
    if Version(old.group(1)) >= new:
        print(f"error: {new} is not newer than {old.group(1)}", file=sys.stderr)
        return 1
    version_file.write_text(text.replace(old.group(0), f'__version__ = "{new}"'))
    plugins = sorted((args.root / "plugins").glob("*/setup.cfg"))
    for cfg in plugins:
        bump_setup_cfg(cfg, new)
    bump_changelog(args.root / "CHANGELOG.md", new)
    print(f"prosaas {old.group(1)} -> {new}; {len(plugins)} plugins require prosaas>={new},"
          f"<{next_minor(new)}; CHANGELOG.md has a [{new}] section")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
