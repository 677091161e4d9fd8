"""Exact resume: SIGKILL at a random iteration, resume, same weights.

A run killed with SIGKILL and resumed with ``--resume`` must end with
weights bit-identical to an uninterrupted run (model, optimizer, scheduler,
noise, data order) and keep one MLflow run with continuous steps.
"""
import os
import random
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import BASELINE, BASELINE_ITERS, REPO, mlflow_store
from tests.tools import run_tool
from uno.engine.checkpoint import load_checkpoint_file

CONFIG = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'
ITERS = 12
pytestmark = pytest.mark.slow


def _args(work_dir, *extra):
    """Arguments of tools/train.py for a 12-iteration UNO run."""
    return [
        CONFIG, '--work-dir', str(work_dir), '--cfg-options',
        f'train_cfg.max_iters={ITERS}', 'train_cfg.val_interval=1000',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
        'train_dataloader.batch_size=4', *extra
    ]


def _cmd(work_dir, *extra):
    """The same as a process (for the runs that get killed)."""
    return [sys.executable, 'tools/train.py'] + _args(work_dir, *extra)


def _tool_env(tmp_path):
    return dict(MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'mlflow.db'))


def _env(tmp_path):
    return dict(os.environ, PYTHONUNBUFFERED='1', **_tool_env(tmp_path))


def _weights(path):
    return load_checkpoint_file(str(path))['state_dict']


@pytest.fixture(scope='module')
def reference(tmp_path_factory, baseline_run):
    """An uninterrupted run, the session's ``baseline_run`` (this config,
    batch and length; a checkpoint at every step): (a tmp root for this
    module's runs, its last checkpoint)."""
    assert BASELINE_ITERS == ITERS and BASELINE == CONFIG
    return tmp_path_factory.mktemp('resume'), baseline_run / \
        f'iter_{ITERS}.pth'


def _assert_same_weights(ref_path, path):
    a, b = _weights(ref_path), _weights(path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigkill_then_resume_is_bit_identical(reference):
    tmp_path, ref_ckpt = reference
    env = _env(tmp_path)
    run_dir = tmp_path / 'work_dirs/run'

    kill_at = random.Random(os.getpid()).randint(5, 9)
    proc = subprocess.Popen(_cmd(run_dir), cwd=REPO, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed_after = None
    for line in proc.stdout:
        m = re.search(r'Iter\(train\) \[\s*(\d+)/', line)
        if m and int(m.group(1)) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed_after = int(m.group(1))
            break
    proc.wait(timeout=120)
    assert killed_after is not None and proc.returncode == -signal.SIGKILL
    assert not (run_dir / f'iter_{ITERS}.pth').exists()

    code, _, err = run_tool('train', _args(run_dir, '--resume'),
                            env=_tool_env(tmp_path))
    assert code == 0, err[-3000:]
    _assert_same_weights(ref_ckpt, run_dir / f'iter_{ITERS}.pth')

    import mlflow
    client = mlflow.MlflowClient(env['MLFLOW_TRACKING_URI'])
    exp = client.get_experiment_by_name('uno')
    run_ids = {r.info.run_id for r in client.search_runs(
        [exp.experiment_id])}
    # the interrupted+resumed run is one (the reference logs elsewhere)
    assert len(run_ids) == 1
    with open(run_dir / 'mlflow_run_id.txt') as f:
        run_id = f.read().strip()
    steps = {m.step for m in client.get_metric_history(run_id, 'loss/flow')}
    assert steps == set(range(1, ITERS + 1))


# imported by the run through custom_imports: the save of step
# $UNO_KILL_AT_SAVE writes half its temporary file, then SIGKILLs the process
KILLER = r'''
import os, signal, tempfile
import torch
import uno.engine.hooks.checkpoint_hook as saver
from uno.engine.checkpoint import checkpoint_step, to_plain

_save = saver.save_checkpoint_file


def save_or_die(checkpoint, path):
    if checkpoint_step(path) == int(os.environ.get('UNO_KILL_AT_SAVE', -1)):
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp', dir=os.path.dirname(path))
        with os.fdopen(fd, 'wb') as f:
            torch.save(to_plain(checkpoint), f)
            f.truncate(f.tell() // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    _save(checkpoint, path)


saver.save_checkpoint_file = save_or_die
'''


def test_sigkill_during_save_keeps_the_only_checkpoint(reference):
    """max_keep_ckpts=1, killed while iter_8 is written: iter_6 survives,
    --resume cleans the temp file and ends bit-identical."""
    tmp_path, ref_ckpt = reference
    (tmp_path / 'uno_test_killer.py').write_text(KILLER)
    config = tmp_path / 'killable.py'
    config.write_text(f"_base_ = ['{REPO}/{CONFIG}']\n"
                      "custom_imports = dict(imports=['uno_test_killer'])\n")
    run_dir = tmp_path / 'work_dirs/killed'
    env = dict(_env(tmp_path), UNO_KILL_AT_SAVE='8',
               PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}')
    cmd = _cmd(run_dir, 'default_hooks.checkpoint.max_keep_ckpts=1')
    cmd[2] = str(config)
    killed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    names = sorted(os.listdir(run_dir))
    assert 'iter_6.pth' in names and 'iter_8.pth' not in names, names
    assert any(n.startswith('.iter_8.pth.') for n in names), names
    assert (run_dir / 'last_checkpoint').read_text().endswith('iter_6.pth')
    _weights(run_dir / 'iter_6.pth')  # complete and loadable

    # the resume in-process, on the config without the killer (it only
    # adds the import)
    code, out, err = run_tool(
        'train', _args(run_dir, 'default_hooks.checkpoint.max_keep_ckpts=1',
                       '--resume'), env=_tool_env(tmp_path))
    assert code == 0, err[-3000:]
    assert 'incomplete file(s) of killed saves' in out + err
    names = sorted(os.listdir(run_dir))
    assert not any(n.endswith('.tmp') for n in names), names
    assert [n for n in names if n.startswith('iter_')] == \
        [f'iter_{ITERS}.pth']
    _assert_same_weights(ref_ckpt, run_dir / f'iter_{ITERS}.pth')
