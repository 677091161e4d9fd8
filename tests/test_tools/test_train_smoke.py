"""End to end: tools/train.py and tools/test.py on the smoke configs,
resume, MLflow.

They run each tool's ``main`` in-process with a command line, as a user
would type it (tests/tools.py); malformed configs are in
test_bad_configs.py.
"""
import json
import os
import pytest

from tests.conftest import mlflow_store
from tests.tools import logged_rows, run_tool

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'


def _train(tmp_path, monkeypatch, capsys, *args, iters=20):
    """Train the smoke config; (exit status, stdout + stderr)."""
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))
    code, out, err = run_tool('train', [
        SMOKE, '--work-dir',
        str(tmp_path / 'work_dirs' / 'smoke'), '--cfg-options',
        f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
        'default_hooks.checkpoint.interval=10',
        'default_hooks.logger.interval=5', 'log_processor.window_size=1',
        'train_dataloader.batch_size=4', *args
    ], monkeypatch, capsys)
    return code, out + err


def test_train_resume_and_mlflow(tmp_path, monkeypatch, capsys):
    work_dir = tmp_path / 'work_dirs' / 'smoke'
    code, log = _train(tmp_path, monkeypatch, capsys, iters=20)
    assert code == 0, log[-3000:]
    assert (work_dir / 'iter_10.pth').is_file()
    assert (work_dir / 'iter_20.pth').is_file()
    assert 'mlflow ui --backend-store-uri' in log

    code, log = _train(tmp_path, monkeypatch, capsys, '--resume', iters=30)
    assert code == 0, log[-3000:]
    assert (work_dir / 'iter_30.pth').is_file()
    assert 'resumed' in log.lower()
    # the resumed run continues counting: no iteration 5 again, 25 and 30
    steps = sorted(r['step'] for r in logged_rows(work_dir) if 'loss' in r)
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


def test_test_tool_runs_benchmarks(tmp_path, monkeypatch, capsys):
    """tools/test.py on a 4-iteration checkpoint: metrics.json, grids,
    and an MLflow evaluation run."""
    code, log = _train(tmp_path, monkeypatch, capsys, iters=4)
    assert code == 0, log[-3000:]
    ckpt = tmp_path / 'work_dirs' / 'smoke' / 'iter_4.pth'
    out = tmp_path / 'metrics.json'
    code, stdout, err = run_tool('test', [
        SMOKE, str(ckpt), '--out', str(out), '--cfg-options',
        'test_dataloader.dataset.tasks.geneval.n_per_tag=2',
        'test_dataloader.dataset.tasks.edit.num_samples=4',
        'test_dataloader.dataset.tasks.caption.num_samples=4',
        'benchmark.sampler.num_steps=2', 'test_dataloader.batch_size=8'
    ], monkeypatch, capsys)
    assert code == 0, err[-3000:]
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
    assert 'geneval/overall' in stdout

    import mlflow
    client = mlflow.MlflowClient(os.environ['MLFLOW_TRACKING_URI'])
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
def test_uno_run_logs_each_objective(tmp_path, options, expect,
                                     monkeypatch, capsys):
    """The UNO smoke config logs loss/flow, loss/caption, loss/regression;
    switching captioning off and changing K changes the run."""
    uri = mlflow_store(tmp_path / 'mlflow.db')
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    code, _, err = run_tool('train', [
        UNO, '--work-dir', str(tmp_path / 'work_dirs' / 'uno'),
        '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=1000', 'default_hooks.logger.interval=1',
        'log_processor.window_size=1', 'train_dataloader.batch_size=2',
        *options], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    import mlflow
    client = mlflow.MlflowClient(uri)
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
