"""Atomic checkpoint writes, trusted loading, clear mismatch errors."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.fileio import get_file_backend
from torch import nn

from uno.engine.checkpoint import (AtomicLocalBackend, atomic_write,
                                   load_model_weights, load_trusted_local)


def test_local_writes_go_through_the_atomic_backend(tmp_path):
    backend = get_file_backend(str(tmp_path / 'x.pth'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put_text('iter_3.pth', str(tmp_path / 'last_checkpoint'))
    assert (tmp_path / 'last_checkpoint').read_text() == 'iter_3.pth'


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    atomic_write(b'old', str(path))

    def boom(*args):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError):
        atomic_write(b'new', str(path))
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['ckpt.pth']  # no temp file left


WRITER = r'''
import sys, torch
sys.path.insert(0, {repo!r})
from uno.engine.checkpoint import atomic_write
import io
i = 0
while True:
    buf = io.BytesIO()
    torch.save({{'step': i, 'w': torch.full((2_000_000,), float(i))}}, buf)
    atomic_write(buf.getvalue(), {path!r})
    i += 1
'''


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    from tests.conftest import REPO
    path = str(tmp_path / 'ckpt.pth')
    proc = subprocess.Popen(
        [sys.executable, '-c', WRITER.format(repo=REPO, path=path)])
    try:
        deadline = time.time() + 60
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.7)  # several saves in, most likely mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_trusted_local(path)
    assert torch.all(ckpt['w'] == float(ckpt['step']))


def test_trusted_loader_reads_mmengine_history(tmp_path):
    from mmengine.logging import HistoryBuffer
    path = tmp_path / 'c.pth'
    torch.save(dict(message_hub=HistoryBuffer([1.0], [1])), path)
    with pytest.raises(Exception):
        torch.load(path)  # weights_only=True rejects it
    assert isinstance(load_trusted_local(str(path))['message_hub'],
                      HistoryBuffer)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_trusted_local(str(tmp_path / 'nope.pth'))


def test_mismatch_names_keys_and_shapes():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    sd = model.state_dict()
    sd['0.weight'] = torch.zeros(4, 2)
    sd['extra'] = torch.zeros(1)
    del sd['1.bias']
    with pytest.raises(RuntimeError) as err:
        load_model_weights(model, sd)
    msg = str(err.value)
    assert '1.bias' in msg and 'extra' in msg and '(4, 2)' in msg
    report = load_model_weights(model, sd, strict=False)
    assert report['missing'] == ['1.bias']
    assert torch.equal(model[1].weight, sd['1.weight'])
