"""The learner's torch CPU threads: TORCH_THREADS, or half the cores (at least one), so the
learner does not spin against the emulators' MAME processes for the same cores."""
import os

from services.learner.device import cpu_threads
from services.learner.settings import load_learner_config


def test_an_explicit_thread_count_is_kept():
    assert cpu_threads(3) == 3
    assert load_learner_config({"TORCH_THREADS": "4"}).torch_threads == 4


def test_the_default_leaves_half_the_cores_to_the_emulators(monkeypatch):
    assert load_learner_config({}).torch_threads == 0
    for cores, threads in ((1, 1), (2, 1), (16, 8), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        assert cpu_threads(0) == threads
