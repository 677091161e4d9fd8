"""tools/sweep.py: command expansion (--dry-run), a real tiny sweep with
its MLflow runs, resuming by skipping finished runs, failures.

The sweep itself runs in-process (its training runs are its own
subprocesses): what is tested is what it starts and reports, not its
command-line contract.
"""
import shlex
import time
from types import SimpleNamespace

import pytest

from tests.conftest import mlflow_store
from tests.tools import run_tool

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
SMOKE_STEM = 'flow_mot-tiny_1xb8-iter200_shapes-t2i'


def _sweep(monkeypatch, capsys, *args):
    """``tools/sweep.py ...`` in-process (its runs are processes)."""
    code, out, err = run_tool('sweep', [str(a) for a in args], monkeypatch,
                              capsys, env=dict(OMP_NUM_THREADS='1'))
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _dry(monkeypatch, capsys, *args):
    """``tools/sweep.py ... --dry-run`` in-process."""
    code, out, err = run_tool('sweep', [str(a) for a in args] + ['--dry-run'],
                              monkeypatch, capsys)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _ablation(tmp_path):
    """configs/abl/ with two configs of 7 iterations (not trainable)."""
    folder = tmp_path / 'configs' / 'abl'
    folder.mkdir(parents=True)
    for stem in ('b_k16', 'a_k4'):
        (folder / f'{stem}.py').write_text(
            "train_cfg = dict(type='IterBasedTrainLoop', max_iters=7)\n")
    return folder


def _commands(stdout):
    """(env prefix, argv after python, log) of each command line."""
    out = []
    for line in stdout.splitlines():
        if line.startswith('#') or not line.strip():
            continue
        words = shlex.split(line)
        assert words[-1] == '2>&1', line
        idx = words.index('>')
        env = [w for w in words[:idx] if '=' in w and '/' not in w][:2]
        argv = words[len(env) + 1:idx]  # after the interpreter
        out.append((env, argv, words[idx + 1]))
    return out


def _after(argv, flag):
    """The values after ``flag`` up to the next ``--`` option."""
    i = argv.index(flag) + 1
    vals = []
    while i < len(argv) and not argv[i].startswith('--'):
        vals.append(argv[i])
        i += 1
    return vals


def test_dry_run_expands_folder_seeds_and_checkpoints(tmp_path, monkeypatch,
                                                      capsys):
    folder = _ablation(tmp_path)
    root = tmp_path / 'work_dirs'
    res = _dry(monkeypatch, capsys, folder, '--seeds', 0, 1, '--jobs', 2,
               '--threads', 3, '--eval', '--eval-checkpoints', 'last',
               'iter_3', '--work-dirs', root, '--eval-cfg-options',
               'benchmark.y=2', '--cfg-options', 'model.x=1')
    assert res.returncode == 0, res.stderr
    cmds = _commands(res.stdout)
    assert len(cmds) == 2 * 2 * 3  # configs x seeds x (train + 2 evals)
    trains = [c for c in cmds if c[1][0].endswith('tools/train.py')]
    tests = [c for c in cmds if c[1][0].endswith('tools/test.py')]
    assert len(trains) == 4 and len(tests) == 8
    assert all(env == ['OMP_NUM_THREADS=3', 'MKL_NUM_THREADS=3']
               for env, _, _ in cmds)
    # config-major, folder sorted: a_k4 before b_k16
    order = [(argv[1].rsplit('/', 1)[-1], _after(argv, '--work-dir')[0])
             for _, argv, _ in trains]
    assert order == [('a_k4.py', f'{root}/abl/a_k4/seed0'),
                     ('a_k4.py', f'{root}/abl/a_k4/seed1'),
                     ('b_k16.py', f'{root}/abl/b_k16/seed0'),
                     ('b_k16.py', f'{root}/abl/b_k16/seed1')]
    _, argv, log = trains[1]
    assert '--resume' not in argv
    assert log == f'{root}/abl/a_k4/seed1/sweep_train.log'
    assert _after(argv, '--cfg-options') == ['model.x=1',
                                             'randomness.seed=1']
    assert _after(argv, '--mlflow-run-name') == ['a_k4-s1']
    assert _after(argv, '--mlflow-tag') == ['sweep=abl', 'config=a_k4',
                                            'seed=1']
    by_name = {_after(a, '--mlflow-run-name')[0]: a for _, a, _ in tests}
    assert sorted(by_name) == sorted(
        f'{c}-s{s}-eval{x}' for c in ('a_k4', 'b_k16') for s in (0, 1)
        for x in ('', '-iter_3'))
    last = by_name['b_k16-s0-eval']
    assert last[2] == f'{root}/abl/b_k16/seed0/iter_7.pth'  # final ckpt
    assert _after(last, '--cfg-options') == [
        'model.x=1', 'benchmark.y=2', 'randomness.seed=0']
    assert _after(last, '--mlflow-tag') == [
        'sweep=abl', 'config=b_k16', 'seed=0', 'checkpoint=last']
    mid = by_name['b_k16-s0-eval-iter_3']
    assert mid[2] == f'{root}/abl/b_k16/seed0/iter_3.pth'
    assert _after(mid, '--mlflow-tag')[-1] == 'checkpoint=iter_3'


def test_dry_run_skips_done_and_resumes_partial(tmp_path, monkeypatch,
                                                capsys):
    folder = _ablation(tmp_path)
    root = tmp_path / 'work_dirs'
    done = root / 'abl' / 'a_k4' / 'seed0'
    done.mkdir(parents=True)
    (done / 'iter_7.pth').write_bytes(b'')
    partial = root / 'abl' / 'b_k16' / 'seed0'
    partial.mkdir(parents=True)
    (partial / 'iter_3.pth').write_bytes(b'')
    (partial / 'last_checkpoint').write_text(str(partial / 'iter_3.pth'))
    args = (folder, '--seeds', 0, '--work-dirs', root)
    res = _dry(monkeypatch, capsys, *args)
    assert res.returncode == 0, res.stderr
    cmds = _commands(res.stdout)
    assert len(cmds) == 1 and '--resume' in cmds[0][1]
    assert _after(cmds[0][1], '--work-dir') == [str(partial)]
    assert f'a_k4 seed 0: trained ({done}/iter_7.pth)' in res.stdout
    # more iterations: the old final checkpoint is not the final one
    res = _dry(monkeypatch, capsys, *args, '--cfg-options',
               'train_cfg.max_iters=9')
    assert len(_commands(res.stdout)) == 2
    forced = _commands(_dry(monkeypatch, capsys, *args, '--force').stdout)
    assert len(forced) == 2 and not any('--resume' in c[1] for c in forced)


def test_failed_run_is_reported_and_exit_nonzero(tmp_path, monkeypatch,
                                                 capsys):
    bad = tmp_path / 'configs' / 'bad'
    bad.mkdir(parents=True)
    (bad / 'broken.py').write_text('model = dict(\n')  # a syntax error
    res = _sweep(monkeypatch, capsys, bad, '--seeds', 1, '--work-dirs',
                 tmp_path / 'wd', '--threads', 1)
    assert res.returncode == 1
    assert res.stdout.count('failed (train exit 2)') == 2  # line + table
    assert 'cannot parse' in res.stdout
    assert '1 of 1 runs failed' in res.stderr
    assert (tmp_path / 'wd' / 'bad' / 'broken' / 'seed1' /
            'sweep_train.log').is_file()


@pytest.mark.slow
def test_tiny_sweep_logs_named_runs_and_resumes(tmp_path, monkeypatch,
                                                capsys):
    # the default store of the root (made from the migrated template: a
    # new store's migration costs seconds and is not what is tested here)
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    root = tmp_path / 'work_dirs'
    root.mkdir()
    mlflow_store(root / 'mlflow.db')
    args = (SMOKE, '--seeds', 0, 1, '--jobs', 2, '--threads', 1,
            '--work-dirs', root,
            '--cfg-options', 'train_cfg.max_iters=2',
            'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
            'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None')
    first = _sweep(monkeypatch, capsys, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    for seed in (0, 1):
        work_dir = root / 'smoke' / SMOKE_STEM / f'seed{seed}'
        assert (work_dir / 'iter_2.pth').is_file()
        assert (work_dir / 'sweep_train.log').is_file()
    assert first.stdout.count(': ok, trained in') == 2
    assert f'--tracking-uri sqlite:///{root}/mlflow.db' in first.stdout

    import mlflow
    client = mlflow.MlflowClient(f'sqlite:///{root}/mlflow.db')
    exp = client.get_experiment_by_name('smoke')
    runs = {r.info.run_name: r for r in client.search_runs(
        [exp.experiment_id])}
    assert sorted(runs) == [f'{SMOKE_STEM}-s0', f'{SMOKE_STEM}-s1']
    for seed in (0, 1):
        run = runs[f'{SMOKE_STEM}-s{seed}']
        tags = run.data.tags
        assert (tags['sweep'], tags['config'], tags['seed']) == (
            'smoke', SMOKE_STEM, str(seed))
        assert run.data.params['randomness.seed'] == str(seed)
        assert run.data.metrics['train/wall_clock_s'] > 0
        assert run.data.metrics['train/mean_iter_time_s'] > 0
        assert 'loss/flow' in run.data.metrics

    start = time.time()
    second = _sweep(monkeypatch, capsys, *args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(': skipped') == 2
    assert time.time() - start < 20  # nothing was trained again
    assert len(client.search_runs([exp.experiment_id])) == 2
