import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from tests.tools import run_tool

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'misc' / 'print_config.py'

BASE = """\
    work_dir = './work_dirs/toy'
    objectives = dict(
        flow=dict(type='FlowMatchingObjective', weight=1.0),
        caption=dict(type='CaptioningObjective', weight=1.0))
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=100)
    """

DELTA = """\
    _base_ = './base.py'
    objectives = dict(caption=dict(weight=0.0))
    train_cfg = dict(max_iters=200, val_interval=50)
    """


def _run(monkeypatch, capsys, *args):
    """tools/misc/print_config.py in-process."""
    code, out, err = run_tool('misc/print_config', [str(a) for a in args],
                              monkeypatch, capsys)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _run_script(*args):
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)  # the script must find uno on its own
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120)


def _configs(tmp_path):
    (tmp_path / 'base.py').write_text(textwrap.dedent(BASE))
    (tmp_path / 'delta.py').write_text(textwrap.dedent(DELTA))
    return tmp_path / 'base.py', tmp_path / 'delta.py'


def test_diff_prints_only_changed_keys(tmp_path, monkeypatch, capsys):
    base, delta = _configs(tmp_path)
    result = _run(monkeypatch, capsys, base, '--diff', delta)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'objectives.caption.weight: 1.0 -> 0.0',
        'train_cfg.max_iters: 100 -> 200',
        '+ train_cfg.val_interval: 50',
    ]


def test_diff_with_cfg_options(tmp_path, monkeypatch, capsys):
    base, delta = _configs(tmp_path)
    result = _run(monkeypatch, capsys, base, '--diff', delta,
                  '--cfg-options',
                  'objectives.caption.weight=0.0', 'train_cfg.max_iters=200',
                  'train_cfg.val_interval=50')
    assert result.returncode == 0, result.stderr
    assert result.stdout == ''


def test_print_resolved(tmp_path, monkeypatch, capsys):
    _, delta = _configs(tmp_path)
    result = _run(monkeypatch, capsys, delta)
    assert result.returncode == 0, result.stderr
    assert "flow=dict(type='FlowMatchingObjective', weight=1.0)" in (
        result.stdout)
    assert 'max_iters=200' in result.stdout


def test_validate_reports_one_line(tmp_path, monkeypatch, capsys):
    base, _ = _configs(tmp_path)
    typo = tmp_path / 'typo.py'
    typo.write_text("_base_ = './base.py'\noptim_wraper = dict()\n")
    result = _run(monkeypatch, capsys, typo, '--validate')
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: unknown top-level config key 'optim_wraper': "
        "did you mean 'optim_wrapper'?"
    ]


def test_runs_as_a_script_without_pythonpath(tmp_path):
    base, delta = _configs(tmp_path)
    result = _run_script(base, '--diff', delta)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        'objectives.caption.weight: 1.0 -> 0.0')
