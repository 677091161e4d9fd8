"""Imported by test_ddp.py's 2-rank launch (``custom_imports``), never by
pytest itself: a hook that runs the 2-rank accumulation checks
(:func:`tests.test_engine.accumulation_checks.rank_checks`) on the
launch's process group before training, so they share the launch's
processes instead of starting two of their own.

The checks build their own models and wrappers; the random state of
torch, numpy and ``random`` is restored afterwards, so the run trains
as it would without the hook (test_ddp.py compares it with the
one-process run).
"""
import os
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from uno.registry import HOOKS


@HOOKS.register_module()
class TwoRankAccumulationProbe(Hook):
    """Before training, :func:`rank_checks` into ``out_dir``."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def before_train(self, runner) -> None:
        from tests.test_engine.accumulation_checks import rank_checks
        os.makedirs(self.out_dir, exist_ok=True)
        states = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            rank_checks(self.out_dir)
        random.setstate(states[0])
        np.random.set_state(states[1])
