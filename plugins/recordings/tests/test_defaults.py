"""The plugin's default settings, as an operator who sets nothing gets them."""

from __future__ import annotations

from prosaas_recordings.config import RecordingsConfig

from prosaas_core.settings import Settings


def test_default_threads_let_two_workers_fill_six_businesses_slots():
    cfg = RecordingsConfig.from_settings(Settings.from_env({}))
    # the threads must not be what caps downloads below the slot limit (2 x 8 < 6 x 3 did)
    assert 2 * cfg.worker_threads >= 6 * cfg.slots_per_business
    assert cfg.worker_threads == 16


def test_threads_setting_still_overrides_the_default():
    cfg = RecordingsConfig.from_settings(Settings.from_env({"RECORDINGS_WORKER_THREADS": "4"}))
    assert cfg.worker_threads == 4
