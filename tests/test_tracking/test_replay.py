"""MLflow down during training: metrics stay local and are pushed later."""
import json
import os

import pytest
from PIL import Image

from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool
from uno.tracking import UnoMLflowVisBackend, replay_work_dir
from uno.tracking.mlflow_backend import RUN_ID_FILE
from uno.tracking.replay import find_logs, read_scalars, replay_identity

mlflow = pytest.importorskip('mlflow')

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
RUN_NAME = 'flow_mot-tiny_1xb8-iter200_shapes-t2i'


def _train(work_dir, uri, iters, monkeypatch, capsys, *args):
    """tools/train.py in-process; (exit status, stdout + stderr)."""
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    code, out, err = run_tool('train', [
        SMOKE, '--work-dir', str(work_dir), '--cfg-options',
        f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=2', 'log_processor.window_size=1',
        'train_dataloader.batch_size=2', *args
    ], monkeypatch, capsys)
    return code, out + err


def _write_log(work_dir, stamp, rows, config='model = dict(type="X")\n'):
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(''.join(
        json.dumps(r) + '\n' for r in rows))
    (vis / 'config.py').write_text(config)
    return vis


def osp_name(vis_dir):
    """``<timestamp>`` of ``<work_dir>/<timestamp>/vis_data``."""
    return os.path.basename(os.path.dirname(vis_dir))


def test_read_scalars_filters_like_the_backend(tmp_path):
    path = tmp_path / 'scalars.json'
    path.write_text('{"loss": 1.5, "iter": 3, "lr": "x", "a b": 2, '
                    '"nan": NaN, "step": 3}\n{"loss": 1.0, "st')
    assert read_scalars(str(path)) == [(3, {'loss': 1.5, 'a b': 2.0})]
    path.write_text('{"bad(key)": 1, "step": 5}\n')
    assert read_scalars(str(path)) == [(5, {'bad_key_': 1.0})]


def test_identity_from_the_work_dir(tmp_path):
    default = tmp_path / 'work_dirs' / 'ablations' / 'mq' / 'uno_mq4'
    default.mkdir(parents=True)
    (default / 'uno_mq4.py').write_text('x = 1\n')
    ident = replay_identity(str(default))
    assert (ident.experiment, ident.run_name) == ('ablations/mq', 'uno_mq4')
    custom = tmp_path / 'work_dirs' / 'smoke'
    custom.mkdir()
    (custom / f'{RUN_NAME}.py').write_text('x = 1\n')
    ident = replay_identity(str(custom))
    assert (ident.experiment, ident.run_name) == ('smoke', RUN_NAME)
    ident = replay_identity(str(custom), config='/r/configs/uno/a_b.py')
    assert (ident.experiment, ident.run_name) == ('uno', 'a_b')
    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    assert replay_identity(str(outside)).experiment == 'default'


def test_replays_every_start_in_order_once(tmp_path):
    work_dir = tmp_path / 'work_dirs' / 'toy'
    cfg = ("visualizer = dict(vis_backends=[dict(type='LocalVisBackend'), "
           "dict(type='UnoMLflowVisBackend', experiment_name='mine', "
           "tags=dict(team='a'))])\n"
           "objectives = dict(flow=dict(type='F', weight=0.5))\n")
    _write_log(work_dir, '20250102_000000', [
        dict(loss=2.0, step=3), dict(loss=1.5, step=4)], cfg)
    _write_log(work_dir, '20250101_000000', [
        dict(loss=3.0, step=1), dict(loss=2.5, step=2)], cfg)
    assert [osp_name(log) for log in find_logs(str(work_dir))] == [
        '20250101_000000', '20250102_000000'
    ]
    uri = mlflow_store(tmp_path / 'm.db')
    first = replay_work_dir(str(work_dir), tracking_uri=uri)
    assert (first.experiment, first.num_metrics, first.num_logs,
            first.continued) == ('mine', 4, 2, False)
    again = replay_work_dir(str(work_dir), tracking_uri=uri)
    assert (again.run_id, again.num_metrics, again.continued) == (
        first.run_id, 0, True)
    client = mlflow.MlflowClient(uri)
    history = client.get_metric_history(first.run_id, 'loss')
    assert sorted((m.step, m.value) for m in history) == [
        (1, 3.0), (2, 2.5), (3, 2.0), (4, 1.5)]
    run = client.get_run(first.run_id)
    assert run.data.params['objectives.flow.weight'] == '0.5'
    assert run.data.tags['team'] == 'a'
    assert (work_dir / RUN_ID_FILE).read_text().strip() == first.run_id


def test_replay_completes_a_run_whose_store_failed_half_way(tmp_path):
    """Steps the run has (logged live, other timestamps) are not logged
    twice; LocalVisBackend's images become the backend's artifacts."""
    work_dir = tmp_path / 'work_dirs' / 'toy'
    vis = _write_log(work_dir, '20250101_000000',
                     [dict(loss=4.0 - step, step=step) for step in (1, 2, 3)])
    (vis / 'vis_image').mkdir()
    Image.new('RGB', (4, 4)).save(vis / 'vis_image' / 'grid_3.png')
    uri = mlflow_store(tmp_path / 'm.db')
    live = UnoMLflowVisBackend(str(work_dir), uri, 'toy', 'toy')
    live.add_scalars(dict(loss=3.0), step=1)  # then the store failed
    assert live.run_id is not None
    res = replay_work_dir(str(work_dir), tracking_uri=uri)
    assert (res.run_id, res.continued, res.num_metrics) == (
        live.run_id, True, 2)
    client = mlflow.MlflowClient(uri)
    assert sorted(m.step for m in client.get_metric_history(
        res.run_id, 'loss')) == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(res.run_id, 'images')
            ] == ['images/grid_step3.png']
    assert client.get_run(res.run_id).info.status == 'FINISHED'


def test_missing_log_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='no local log'):
        replay_work_dir(str(tmp_path), tracking_uri='sqlite:///x.db')


def test_unusable_store_keeps_metrics_for_replay_and_resume(
        tmp_path, monkeypatch, capsys):
    afile = tmp_path / 'afile'
    afile.write_text('a regular file, not a folder')
    work_dir = tmp_path / 'work_dirs' / 'smoke'

    code, log = _train(work_dir, f'sqlite:///{afile}/x.db', 4, monkeypatch,
                       capsys)
    assert code == 0, log[-3000:]
    assert log.count('MLflow tracking is off') == 1  # one warning
    assert 'MLflow was unavailable' in log  # the closing report says so
    assert 'Traceback' not in log
    assert not (work_dir / RUN_ID_FILE).exists()

    uri = mlflow_store(tmp_path / 'good.db')
    code, out, err = run_tool('misc/push_to_mlflow', [
        str(work_dir), '--tracking-uri', uri], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert 'mlflow ui --backend-store-uri' in out

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name('smoke')
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.run_name == RUN_NAME
    history = client.get_metric_history(run_id, 'loss/flow')
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    # the timing metrics went to the local scalars too
    for key in ('train/wall_clock_s', 'train/mean_iter_time_s'):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [4]
    params = run.data.params
    assert params['objectives.flow.weight'] == '1.0'
    assert params['train_cfg.max_iters'] == '4'
    assert params['train_dataloader.batch_size'] == '2'
    assert params['optim_wrapper.optimizer.type'] == 'AdamW'
    assert 'config.py' in [a.path for a in client.list_artifacts(run_id)]
    assert (work_dir / RUN_ID_FILE).read_text().strip() == run_id

    # the store is back: resuming continues the replayed run
    code, log = _train(work_dir, uri, 6, monkeypatch, capsys, '--resume')
    assert code == 0, log[-3000:]
    assert len(client.search_runs([exp.experiment_id])) == 1
    history = client.get_metric_history(run_id, 'loss/flow')
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]


# imported by the run through custom_imports: training raises at step 3
FAILER = r'''
from mmengine.hooks import Hook
from uno.registry import HOOKS


@HOOKS.register_module()
class FailAtThree(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == 3:
            raise RuntimeError('deliberate failure at step 3')
'''


def test_a_run_that_dies_of_an_error_is_marked_failed(
        tmp_path, monkeypatch, capsys):
    (tmp_path / 'uno_test_failer.py').write_text(FAILER)
    config = tmp_path / 'failing.py'
    config.write_text(f"_base_ = ['{REPO}/{SMOKE}']\n"
                      "custom_imports = dict(imports=['uno_test_failer'])\n"
                      "custom_hooks = [dict(type='FailAtThree')]\n")
    uri = mlflow_store(tmp_path / 'm.db')
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_tool('train', [
        str(config), '--work-dir', str(tmp_path / 'work_dirs/failing'),
        '--cfg-options', 'train_cfg.max_iters=6',
        'train_cfg.val_interval=1000', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2'], monkeypatch, capsys)
    assert code != 0
    assert 'deliberate failure at step 3' in err
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ['FAILED']
