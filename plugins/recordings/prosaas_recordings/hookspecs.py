"""The hook the recordings plugin adds to prosaas: transcription of a downloaded recording.

No implementation ships with prosaas. A transcription plugin implements it::

    from prosaas_core import hookimpl

    @hookimpl
    def prosaas_transcribe(path, call):
        return my_asr.transcribe(path)

The recordings plugin adds this specification through ``prosaas_addhooks``, before prosaas
checks hook names, so the implementing plugin loads whatever the order of entry points.
``ensure_hookspecs`` covers plugin managers built without that hook having run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("prosaas")


@hookspec(firstresult=True)
def prosaas_transcribe(path: Path, call: dict[str, Any]) -> str | None:
    """Transcribe the recording at `path` of `call` and return the text (or None to pass).

    `call` is a dict with ``call_sid``, ``business_id``, ``recording_sid``, ``duration`` and
    ``bytes``. The first non-None result is stored in ``calls.transcript``. Called in a download
    thread of the recording worker after the file is complete and its slot released; an
    exception is logged and the recording stays downloaded without a transcript.
    """


def ensure_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add this module's hookspecs to `pm` once (idempotent)."""
    hook = getattr(pm.hook, "prosaas_transcribe", None)
    if hook is None or hook.spec is None:
        pm.add_hookspecs(sys.modules[__name__])
