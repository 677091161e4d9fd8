"""Checkpoint files: inert loading, atomic writes, resume candidates."""
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool
from uno.engine.checkpoint import (CheckpointError, atomic_write,
                                   checkpoint_candidates,
                                   load_checkpoint_file,
                                   remove_stale_temps, save_checkpoint_file,
                                   write_last_checkpoint)

TINY = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'


class _Payload:
    """Unpickling this creates the folder ``path``: code execution."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def craft(tmp_path, **extra):
    """A torch checkpoint that would create ``tmp_path/PWNED`` on load."""
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'shared.pth'
    torch.save(dict(state_dict={'w': torch.zeros(1)},
                    meta=dict(iter=1, epoch=0), hook=_Payload(str(marker)),
                    **extra), path)
    return path, marker


def test_crafted_file_is_refused_and_never_runs(tmp_path):
    path, marker = craft(tmp_path)
    with pytest.raises(CheckpointError, match='refused unloaded') as err:
        load_checkpoint_file(str(path))
    assert str(path) in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint_file(str(path), mmap=True)
    assert not marker.exists()


@pytest.mark.parametrize('make, match', [
    (lambda p: p.mkdir(), 'is a folder'),
    (lambda p: p.write_bytes(b''), 'empty'),
    (lambda p: p.write_bytes(os.urandom(4096)), 'damaged'),
    (None, 'does not exist'),
])
def test_unreadable_files_give_one_line(tmp_path, make, match):
    path = tmp_path / 'x.pth'
    if make is not None:
        make(path)
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint_file(str(path))
    assert '\n' not in str(err.value)


def test_truncated_checkpoint_is_damaged(tmp_path):
    path = tmp_path / 'c.pth'
    save_checkpoint_file(dict(w=torch.randn(1000)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='damaged'):
        load_checkpoint_file(str(path))


def test_history_buffers_round_trip_without_unsafe_globals(tmp_path):
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from torch.serialization import get_unsafe_globals_in_checkpoint
    path = tmp_path / 'c.pth'
    original = HistoryBuffer([1.5, 2.5], [1, 2])
    hub = dict(log_scalars={'loss': original},
               runtime_info=dict(eta=np.float64(3.0), ids=[2, 4]))
    save_checkpoint_file(dict(message_hub=hub, w=torch.ones(2)), str(path))
    assert get_unsafe_globals_in_checkpoint(str(path)) == []
    ckpt = load_checkpoint_file(str(path))
    buf = ckpt['message_hub']['log_scalars']['loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.data[0].tolist() == [1.5, 2.5]
    assert buf.data[1].tolist() == [1, 2] and buf.mean() == original.mean()
    assert ckpt['message_hub']['runtime_info']['eta'] == 3.0


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    atomic_write(b'old', str(path))

    def boom(*args):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError):
        atomic_write(b'new', str(path))
    with pytest.raises(OSError):
        save_checkpoint_file(dict(w=torch.ones(1)), str(path))
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['ckpt.pth']  # no temp file left


@pytest.mark.parametrize('interrupt', ['full disk', 'ctrl-c'])
def test_failed_write_during_torch_save_raises_what_happened(
        interrupt, tmp_path, monkeypatch):
    """torch.save turns a failed write into an unrelated RuntimeError
    (``unexpected pos`` after a Ctrl-C); the save raises the disk's error
    (naming the file) or the Ctrl-C instead, and keeps the old file."""
    import builtins
    import errno
    import io

    from uno.engine import checkpoint as ckpt_module
    path = tmp_path / 'iter_2.pth'
    save_checkpoint_file(dict(w=torch.zeros(1)), str(path))

    class Failing(io.FileIO):
        calls = 0

        def write(self, data):
            Failing.calls += 1
            if interrupt == 'full disk':
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if Failing.calls == 3:  # once, mid-save, as a signal lands
                raise KeyboardInterrupt
            return super().write(data)

    monkeypatch.setattr(ckpt_module, 'open',
                        lambda p, mode: Failing(p, mode.replace('b', '')),
                        raising=False)
    expected = KeyboardInterrupt if interrupt == 'ctrl-c' else OSError
    with pytest.raises(expected) as info:
        save_checkpoint_file(dict(w=torch.ones(10_000)), str(path))
    if interrupt == 'full disk':
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == str(path)
    monkeypatch.setattr(ckpt_module, 'open', builtins.open)
    assert os.listdir(tmp_path) == ['iter_2.pth']
    assert torch.equal(load_checkpoint_file(str(path))['w'], torch.zeros(1))


WRITER = r'''
import sys, torch
sys.path.insert(0, {repo!r})
from uno.engine.checkpoint import save_checkpoint_file
i = 0
while True:
    save_checkpoint_file({{'step': i, 'w': torch.full((2_000_000,),
                                                      float(i))}}, {path!r})
    i += 1
'''


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
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
    ckpt = load_checkpoint_file(path)
    assert torch.all(ckpt['w'] == float(ckpt['step']))


def _touch(path, data=b'x'):
    path.write_bytes(data)
    return str(path)


def test_candidates_newest_first_and_pointer_first(tmp_path):
    for step in (2, 10, 4):
        _touch(tmp_path / f'iter_{step}.pth')
    _touch(tmp_path / '.iter_12.pth.abc.tmp')  # a killed save
    _touch(tmp_path / 'nonfinite_stop_iter_3.pth')
    names = [os.path.basename(p) for p in checkpoint_candidates(tmp_path)]
    assert names == ['iter_10.pth', 'iter_4.pth', 'iter_2.pth']
    write_last_checkpoint(str(tmp_path), str(tmp_path / 'iter_4.pth'))
    names = [os.path.basename(p) for p in checkpoint_candidates(tmp_path)]
    assert names == ['iter_4.pth', 'iter_10.pth', 'iter_2.pth']
    # a dangling pointer falls back to the files themselves
    write_last_checkpoint(str(tmp_path), str(tmp_path / 'iter_99.pth'))
    assert os.path.basename(checkpoint_candidates(tmp_path)[0]) == \
        'iter_10.pth'
    assert remove_stale_temps(str(tmp_path)) == ['.iter_12.pth.abc.tmp']
    assert not (tmp_path / '.iter_12.pth.abc.tmp').exists()


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path):
    from uno.engine.runner import _resume_target
    save_checkpoint_file(dict(meta=dict(iter=4), state_dict=dict(
        w=torch.ones(1))), str(tmp_path / 'iter_4.pth'))
    _touch(tmp_path / 'iter_6.pth', os.urandom(100))  # no last_checkpoint
    path, note = _resume_target(str(tmp_path))
    assert path.endswith('iter_4.pth')
    assert 'iter_6.pth' in note and 'iter_4.pth' in note
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match='no checkpoint in .* can be'):
        _resume_target(str(tmp_path))


def test_resume_skips_a_damaged_checkpoint_of_a_custom_name(tmp_path):
    from uno.engine.runner import _resume_target
    save_checkpoint_file(dict(meta=dict(iter=4), state_dict=dict(
        w=torch.ones(1))), str(tmp_path / 'ckpt_4.pth'))
    _touch(tmp_path / 'ckpt_6.pth', os.urandom(100))
    write_last_checkpoint(str(tmp_path), str(tmp_path / 'ckpt_6.pth'))
    path, note = _resume_target(str(tmp_path), 'ckpt_{}.pth')
    assert path.endswith('ckpt_4.pth') and 'ckpt_6.pth' in note
    assert [os.path.basename(p) for p in checkpoint_candidates(
        tmp_path, 'ckpt_{}.pth')] == ['ckpt_6.pth', 'ckpt_4.pth']


def test_resume_in_an_empty_work_dir_starts_fresh(tmp_path):
    from uno.engine.runner import _resume_target
    path, note = _resume_target(str(tmp_path))
    assert path is None and 'training from scratch' in note


@pytest.mark.parametrize('how', ['load_from', 'resume'])
def test_train_never_runs_a_crafted_checkpoint(tmp_path, monkeypatch,
                                               capsys, how):
    path, marker = craft(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))
    args = [TINY, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
            'train_cfg.max_iters=1']
    if how == 'load_from':
        args.append(f'load_from={path}')
    else:
        args += ['--resume', str(path)]
    code, _, err = run_tool('train', args, monkeypatch, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'refused unloaded' in errors[0], err
    assert 'Traceback' not in err
    assert not marker.exists()


def test_export_weights_never_runs_a_crafted_checkpoint(tmp_path,
                                                        monkeypatch, capsys):
    path, marker = craft(tmp_path)
    code, _, err = run_tool('misc/export_weights', [
        str(path), str(tmp_path / 'out.safetensors')], monkeypatch, capsys)
    assert code == 2 and not marker.exists()
    assert 'refused unloaded' in err


def test_test_tool_never_runs_a_crafted_checkpoint(tmp_path, monkeypatch,
                                                   capsys):
    """tools/test.py: exit status 2, one line, no marker."""
    path, marker = craft(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))
    code, _, err = run_tool('test', [TINY, str(path), '--work-dir',
                                     str(tmp_path / 'eval')],
                            monkeypatch, capsys)
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'refused unloaded' in lines[0], lines
    assert not marker.exists()


def test_resume_ignores_config_code_in_meta(tmp_path):
    """mmengine's resume executes ``meta['config']``: uno drops it."""
    from uno.engine.runner import _drop_code
    checkpoint = dict(meta=dict(iter=1, config='import os'))
    _drop_code(checkpoint, 'x.pth', logging.getLogger('fake'))
    assert 'config' not in checkpoint['meta']


@pytest.mark.parametrize('obj, match', [
    ([1, 2, 3], 'holds a list, not a dict of tensors'),
    (dict(state_dict='oops'), "whose 'state_dict' is a str"),
])
def test_checkpoint_of_the_wrong_form_is_one_line(tmp_path, obj, match):
    path = tmp_path / 'c.pth'
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint_file(str(path))
