"""Plugins use the core only through its public API (`prosaas_core.public.PUBLIC`), and the
plugin guide prints exactly that list."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

from prosaas_core import public

ROOT = Path(__file__).resolve().parent.parent
#: every plugin"s code, its tests included, and the third-party stand-in
SCANNED = [*sorted((ROOT / "plugins").glob("*/")), ROOT / "tests" / "fixtures" / "acme_plugin"]
GUIDE = ROOT / "docs" / "plugin-guide.md"
START, END = "<!-- public-api:start -->\n", "<!-- public-api:end -->"


def core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, "module" or "module.name") for each import of a prosaas_core name in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "prosaas_core"
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "prosaas_core":
                found += [(node.lineno, f"{node.module}:{a.name}") for a in node.names]
    return found


def violations() -> set[tuple[str, str]]:
    out = set()
    for top in SCANNED:
        for path in sorted(top.rglob("*.py")):
            if any(part in {"build", ".eggs"} or part.endswith(".egg-info") for part in path.parts):
                continue
            for _line, imported in core_imports(path):
                module, _, name = imported.partition(":")
                if not public.is_public(module, name or None):
                    out.add((str(path.relative_to(ROOT)), imported.replace(":", ".")))
    return out


def test_plugins_import_only_public_core_names():
    found = sorted(violations())
    assert not found, (
        "plugins import core names that are not public (prosaas_core/public.py lists the "
        "public ones; use those, or make the name public there and in the plugin guide):\n"
        + "\n".join(f"  {path}: {name}" for path, name in found)
    )


def test_is_public_reads_the_list():
    assert public.is_public("prosaas_core", "JobType")
    assert public.is_public("prosaas_core", "limits")  # the module, public as a whole
    assert public.is_public("prosaas_core.limits", "parse_rate")
    assert not public.is_public("prosaas_core.limits", "_BACKOFF")
    assert not public.is_public("prosaas_core.db", "autocommit")
    assert not public.is_public("prosaas_core.jobs.store")
    assert public.is_public("prosaas_core.settings")


def test_the_plugin_guide_prints_the_same_list():
    text = GUIDE.read_text()
    assert START in text and END in text, f"{GUIDE.name} lost its public-api markers"
    printed = text.split(START, 1)[1].split(END, 1)[0]
    assert printed == public.markdown(), (
        "the public API list in docs/plugin-guide.md differs from prosaas_core/public.py; "
        "paste the output of `python -m prosaas_core.public` between the markers"
    )


def test_mypy_is_strict_on_every_public_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = {
        m
        for o in config["overrides"]
        if o.get("disallow_untyped_defs")
        for m in ([o["module"]] if isinstance(o["module"], str) else o["module"])
    }
    public_modules = {m for m in public.PUBLIC if importlib.util.find_spec(m) is not None}
    assert public_modules <= strict, (
        "pyproject.toml: add to the strict [[tool.mypy.overrides]]: "
        + ", ".join(sorted(public_modules - strict))
    )
