"""The core's release version and the version of the plugin contract it provides.

Two numbers because they move apart: a release that only fixes bugs or adds core features bumps
``__version__``; ``CONTRACT_VERSION`` (semver) moves only when the public plugin contract does
(see ``docs/hooks.md``, "Public names and their stability"): a new public name or hook is a
minor bump, removing or changing one is a major bump. A plugin states the contract it needs
with ``PROSAAS_CONTRACT = ">=1,<2"`` in its module; ``scripts/bump_version.py`` updates
``__version__`` and every bundled plugin together.
"""

from __future__ import annotations

__version__ = "0.1.0"
CONTRACT_VERSION = "1.0.0"
