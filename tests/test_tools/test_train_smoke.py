"""End to end: tools/train.py on the smoke config, resume, MLflow, errors.

These run the real command line in a subprocess, as a user would.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import REPO

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
pytestmark = pytest.mark.slow


def _train(tmp_path, *args, iters=20):
    env = dict(os.environ,
               MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db')
    cmd = [
        sys.executable, 'tools/train.py', SMOKE, '--work-dir',
        str(tmp_path / 'work_dirs' / 'smoke'), '--cfg-options',
        f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
        'default_hooks.checkpoint.interval=10',
        'default_hooks.logger.interval=5', 'log_processor.window_size=1',
        'train_dataloader.batch_size=4', *args
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _scalars(work_dir):
    rows = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                rows += [json.loads(line) for line in f]
    return rows


def test_train_resume_and_mlflow(tmp_path):
    work_dir = tmp_path / 'work_dirs' / 'smoke'
    first = _train(tmp_path, iters=20)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (work_dir / 'iter_10.pth').is_file()
    assert (work_dir / 'iter_20.pth').is_file()
    assert 'mlflow ui --backend-store-uri' in first.stdout + first.stderr

    second = _train(tmp_path, '--resume', iters=30)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (work_dir / 'iter_30.pth').is_file()
    log = second.stdout + second.stderr
    assert 'resumed' in log.lower()
    # the resumed run continues counting: no iteration 5 again, 25 and 30
    steps = sorted(r['step'] for r in _scalars(work_dir) if 'loss' in r)
    assert steps.count(5) == 1 and 25 in steps and 30 in steps

    import mlflow
    client = mlflow.MlflowClient(f'sqlite:///{tmp_path}/mlflow.db')
    exp = client.get_experiment_by_name('smoke')
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # resume continued the same run
    run = runs[0]
    assert run.info.run_name == 'flow_mot-tiny_1xb8-iter200_shapes-t2i'
    history = client.get_metric_history(run.info.run_id, 'loss/flow')
    steps = [m.step for m in history]
    assert 5 in steps and 30 in steps
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values[-1] < values[0]  # the flow loss falls
    assert run.data.params['objectives.flow.weight'] == '1.0'
    assert run.data.tags['config_path'].endswith(SMOKE.split('/')[-1])
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert 'config.py' in artifacts


@pytest.mark.parametrize('option, names', [
    ('optim_wraper.type=OptimWrapper', ('optim_wraper', 'optim_wrapper')),
    ('objectives.flow.type=FlowMatchingObjectiv',
     ('FlowMatchingObjectiv', 'FlowMatchingObjective')),
    ('objectives.flow.wieght=0.5', ('wieght', 'weight')),
])
def test_bad_config_is_one_clear_line(tmp_path, option, names):
    res = _train(tmp_path, option, iters=2)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith('error: ')
    for name in names:
        assert name in lines[0]
    assert 'Traceback' not in res.stderr


def test_test_tool_runs_benchmarks(tmp_path):
    """tools/test.py on a 4-iteration checkpoint: metrics.json, grids,
    and an MLflow evaluation run."""
    trained = _train(tmp_path, iters=4)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = tmp_path / 'work_dirs' / 'smoke' / 'iter_4.pth'
    out = tmp_path / 'metrics.json'
    env = dict(os.environ,
               MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db')
    res = subprocess.run(
        [sys.executable, 'tools/test.py', SMOKE, str(ckpt), '--out',
         str(out), '--cfg-options',
         'test_dataloader.dataset.tasks.geneval.n_per_tag=2',
         'test_dataloader.dataset.tasks.edit.num_samples=4',
         'test_dataloader.dataset.tasks.caption.num_samples=4',
         'benchmark.sampler.num_steps=2', 'test_dataloader.batch_size=8'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.load(open(out))['metrics']
    for key in ('geneval/overall', 'geneval/counting', 'edit/satisfied',
                'understanding/attr_acc', 'understanding/perplexity'):
        assert key in metrics
    assert metrics['geneval/num_images'] == 12  # 6 tags x 2
    for key in ('geneval/overall', 'geneval/counting', 'edit/satisfied'):
        low, high = (metrics[f'{key}/ci_{s}'] for s in ('low', 'high'))
        assert low <= metrics[key] <= high
    items = json.load(open(tmp_path / 'per_item.json'))
    assert len(items['GenEvalMetric']) == 12
    assert len(items['EditMetric']) == 4
    assert len(items['UnderstandingMetric']) == 4
    assert 'understanding/shape_acc/ci_low' in metrics
    assert {r['index'] for r in items['GenEvalMetric']} == set(range(12))
    grids = tmp_path / 'work_dirs' / 'smoke' / 'eval' / 'iter_4' / 'grids'
    assert (grids / 'geneval_position.png').is_file()
    assert (grids / 'edit_recolor.png').is_file()
    assert 'geneval/overall' in res.stdout

    import mlflow
    client = mlflow.MlflowClient(env['MLFLOW_TRACKING_URI'])
    exp = client.get_experiment_by_name('smoke')
    runs = {r.info.run_name: r for r in client.search_runs(
        [exp.experiment_id])}
    run = runs['flow_mot-tiny_1xb8-iter200_shapes-t2i-eval']
    assert 'geneval/overall' in run.data.metrics
    assert run.data.tags['checkpoint'] == str(ckpt)


UNO = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'


@pytest.mark.parametrize('options, expect', [
    ((), dict(caption=True, k=16)),
    (('objectives.caption.weight=0', 'model.metaquery.num_queries=4'),
     dict(caption=False, k=4)),
])
def test_uno_run_logs_each_objective(tmp_path, options, expect):
    """The UNO smoke config logs loss/flow, loss/caption, loss/regression;
    switching captioning off and changing K changes the run."""
    env = dict(os.environ,
               MLFLOW_TRACKING_URI=f'sqlite:///{tmp_path}/mlflow.db')
    res = subprocess.run(
        [sys.executable, 'tools/train.py', UNO, '--work-dir',
         str(tmp_path / 'work_dirs' / 'uno'), '--cfg-options',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=1000',
         'default_hooks.logger.interval=1', 'log_processor.window_size=1',
         'train_dataloader.batch_size=2', *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import mlflow
    client = mlflow.MlflowClient(env['MLFLOW_TRACKING_URI'])
    exp = client.get_experiment_by_name('uno')
    run = client.search_runs([exp.experiment_id])[0]
    metrics, params = run.data.metrics, run.data.params
    assert 'loss/flow' in metrics and 'loss/regression' in metrics
    assert ('loss/caption' in metrics) == expect['caption']
    assert params['model.metaquery.num_queries'] == str(expect['k'])
    assert params['objectives.caption.weight'] == (
        '0.5' if expect['caption'] else '0')
    # K metaqueries per sample, batch 2: the regression token count
    assert metrics['tokens/regression'] == 2 * expect['k']
