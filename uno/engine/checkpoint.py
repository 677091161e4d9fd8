"""Checkpoint loading that works with torch >= 2.6.

mmengine 0.10.7 loads checkpoints with ``torch.load``'s default
``weights_only=True`` (torch >= 2.6), which rejects the message-hub history
mmengine itself saves, so ``--resume`` fails with ``UnpicklingError``. uno
registers a loader for local paths that passes ``weights_only=False``:
checkpoints written by your own runs are trusted files. Importing
``uno.engine`` installs it.
"""
import os.path as osp

import torch
from mmengine.runner import CheckpointLoader


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_trusted_local(filename: str, map_location=None):
    """Load a local checkpoint written by uno/mmengine (trusted)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return torch.load(filename, map_location=map_location,
                      weights_only=False)
