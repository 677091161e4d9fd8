"""Tests of :class:`UnoMLflowVisBackend` against a real sqlite MLflow store.

Creating a sqlite store costs MLflow a few seconds of schema migrations, so
all tests but the default-store one share one store per module.
"""
import logging
import os
import os.path as osp
import shutil

import torch

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from tests.conftest import mlflow_store

from uno.registry import VISBACKENDS
from uno.tracking import UnoMLflowVisBackend
from uno.tracking.mlflow_backend import RUN_ID_FILE, work_dirs_root

mlflow = pytest.importorskip('mlflow')

CONFIG = dict(
    objectives=dict(
        flow=dict(type='FlowMatchingObjective', weight=1.0),
        cap=dict(type='CaptioningObjective', weight=0.5)),
    model=dict(
        type='UnoModel',
        llm=dict(hidden_size=32),
        metaquery=dict(num_queries=16)),
    optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-4)),
    train_dataloader=dict(batch_size=2),
    train_cfg=dict(max_iters=10),
    randomness=dict(seed=0),
    launcher='none')
EXPECTED_PARAMS = {
    'objectives.flow.weight': '1.0',
    'objectives.cap.weight': '0.5',
    'model.metaquery.num_queries': '16',
    'optim_wrapper.optimizer.lr': '0.0001',
    'optim_wrapper.optimizer.type': 'AdamW',
    'train_dataloader.batch_size': '2',
    'train_cfg.max_iters': '10',
    'randomness.seed': '0',
    'launcher': 'none',
}
FILENAME = '/x/configs/ablations/mq/uno_mq16.py'


@pytest.fixture(scope='module')
def store_uri(tmp_path_factory):
    return mlflow_store(tmp_path_factory.mktemp('store') / 'mlflow.db')


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')
    for name in ('MLFLOW_TRACKING_URI', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)


def make_cfg(work_dir, **overrides):
    cfg = dict(CONFIG, work_dir=str(work_dir), **overrides)
    return Config(cfg, cfg_text='# test config', filename=FILENAME)


def save_dir_of(work_dir):
    return str(work_dir / '20260101_000000' / 'vis_data')


@pytest.fixture
def warnings_seen():
    """WARNING records sent through mmengine's current logger."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_names_tags_params_config_scalars(tmp_path, store_uri):
    work_dir = tmp_path / 'wd'
    backend = UnoMLflowVisBackend(
        save_dir=save_dir_of(work_dir), tracking_uri=store_uri)
    backend.add_config(make_cfg(work_dir))
    for step, loss in ((1, 0.5), (2, 0.25)):
        backend.add_scalars(
            {
                'loss': 2 * loss,
                'loss/flow': loss,
                'lr': 1e-4,
                'time': 0.1,
                'iter': step,
                'epoch': 0,
                'note': 'text',
                'bad': float('nan')
            },
            step=step)
    backend.add_scalar('grad_norm', np.float32(3.0), step=2)
    backend.set_tags(dict(checkpoint='iter_2.pth'))
    backend.close()

    client = mlflow.MlflowClient(store_uri)
    run = client.get_run(backend.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == 'ablations/mq'
    assert backend.experiment_id == exp.experiment_id
    assert run.info.run_name == 'uno_mq16'
    assert run.info.status == 'FINISHED'
    assert run.data.tags['config_path'] == FILENAME
    assert run.data.tags['git_commit']
    assert run.data.tags['work_dir'] == str(work_dir)
    assert run.data.tags['checkpoint'] == 'iter_2.pth'
    assert run.data.params == EXPECTED_PARAMS  # allow-list only
    assert 'config.py' in [
        a.path for a in client.list_artifacts(run.info.run_id)
    ]
    assert history(client, backend.run_id, 'loss/flow') == [(1, 0.5),
                                                            (2, 0.25)]
    assert set(
        run.data.metrics) == {'loss', 'loss/flow', 'lr', 'time', 'grad_norm'}
    with open(work_dir / RUN_ID_FILE) as f:
        assert f.read().strip() == backend.run_id
    # artifacts sit next to the store, not in ./mlruns below the cwd
    assert run.info.artifact_uri.startswith(
        osp.join(osp.dirname(store_uri[len('sqlite:///'):]), 'mlartifacts'))


def test_extra_params(tmp_path, store_uri):
    backend = UnoMLflowVisBackend(
        save_dir=str(tmp_path),
        tracking_uri=store_uri,
        extra_params=['model.llm.hidden_size', 'no.such.key'],
        experiment_name='custom',
        run_name='r1',
        artifact_location=str(tmp_path / 'artifacts'))
    backend.add_config(make_cfg(tmp_path))
    run = mlflow.MlflowClient(store_uri).get_run(backend.run_id)
    assert run.data.params == dict(EXPECTED_PARAMS,
                                   **{'model.llm.hidden_size': '32'})
    assert run.info.run_name == 'r1'
    # a new experiment keeps its artifacts where the config says
    assert str(tmp_path / 'artifacts') in run.info.artifact_uri
    backend.close()


def test_images_keep_one_file_per_step(tmp_path, store_uri):
    backend = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    backend.add_config(make_cfg(tmp_path))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    backend.add_image('samples/grid 0.png', image, step=1)
    backend.add_image('samples/grid 0.png', image + 255, step=2)
    files = mlflow.MlflowClient(store_uri).list_artifacts(
        backend.run_id, 'images')
    assert sorted(f.path for f in files) == [
        'images/samples_grid_0_step1.png', 'images/samples_grid_0_step2.png'
    ]
    backend.close()


def test_resume_continues_the_run(tmp_path, store_uri):
    client = mlflow.MlflowClient(store_uri)
    first = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    first.add_config(make_cfg(tmp_path))
    first.add_scalars({'loss/flow': 1.0}, step=1)
    first.close()
    # mmengine resumes only when the work dir has a checkpoint
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_1.pth'))

    resumed = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    # lr changed on resume: the logged param keeps its first value
    resumed.add_config(
        make_cfg(
            tmp_path,
            resume=True,
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1.0))))
    resumed.add_scalars({'loss/flow': 0.5}, step=2)
    assert resumed.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == 'RUNNING'
    resumed.close()
    assert history(client, first.run_id, 'loss/flow') == [(1, 1.0), (2, 0.5)]
    run = client.get_run(first.run_id)
    assert run.info.status == 'FINISHED'
    assert run.data.params['optim_wrapper.optimizer.lr'] == '0.0001'

    fresh = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    fresh.add_config(make_cfg(tmp_path, resume=False))
    assert fresh.run_id not in (None, first.run_id)
    with open(tmp_path / RUN_ID_FILE) as f:
        assert f.read().strip() == fresh.run_id
    fresh.close()


def test_scalar_before_config_uses_default_experiment(tmp_path, store_uri):
    backend = UnoMLflowVisBackend(
        save_dir=str(tmp_path), tracking_uri=store_uri)
    backend.add_scalar('lr', 0.1, step=3)
    client = mlflow.MlflowClient(store_uri)
    exp = client.get_experiment(backend.experiment_id)
    assert exp.name == 'default'
    assert history(client, backend.run_id, 'lr') == [(3, 0.1)]
    backend.close()


@pytest.mark.parametrize('store', ['under_a_file', 'unreachable_server'])
def test_store_failure_warns_once_and_disables(tmp_path, warnings_seen, store):
    if store == 'under_a_file':
        # a regular file where the store's folder should be fails even as
        # root (MLflow 3 creates missing folders of a sqlite path itself)
        (tmp_path / 'afile').write_text('')
        uri = f"sqlite:///{tmp_path / 'afile' / 'x.db'}"
    else:
        uri = 'http://127.0.0.1:1'  # refused at once, no MLflow retries
    backend = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=uri)
    backend.add_config(make_cfg(tmp_path))
    for step in range(3):
        backend.add_scalars({'loss': 1.0}, step=step)
    backend.add_image('x', np.zeros((4, 4, 3), np.uint8), step=1)
    backend.close()
    assert backend.run_id is None
    assert backend.experiment is None
    assert len(warnings_seen) == 1
    assert 'MLflow tracking is off' in warnings_seen[0].getMessage()


def test_default_store_in_work_dirs_root(tmp_path, store_uri):
    work_dir = tmp_path / 'work_dirs' / 'a' / 'b'
    db = tmp_path / 'work_dirs' / 'mlflow.db'
    # a copy of a migrated store spares the test MLflow's slow migrations
    db.parent.mkdir()
    shutil.copy(store_uri[len('sqlite:///'):], db)
    backend = UnoMLflowVisBackend(save_dir=save_dir_of(work_dir))
    assert backend.tracking_uri == f'sqlite:///{db}'
    backend.add_config(make_cfg(work_dir))
    assert db.is_file()
    # runs that start together queue on this lock for MLflow's migrations
    assert (db.parent / 'mlflow.db.lock').is_file()
    client = mlflow.MlflowClient(f'sqlite:///{db}')
    assert client.get_run(backend.run_id).info.run_name == 'uno_mq16'
    backend.close()


def test_work_dirs_root_rule(tmp_path, monkeypatch):
    assert work_dirs_root('/r/work_dirs/x/work_dirs/a/b') == \
        '/r/work_dirs/x/work_dirs'
    assert work_dirs_root('/r/runs/a') == '/r/runs/a'
    backend = UnoMLflowVisBackend(save_dir=save_dir_of(tmp_path / 'runs'))
    assert backend.tracking_uri == f"sqlite:///{tmp_path / 'runs'}/mlflow.db"
    monkeypatch.setenv('MLFLOW_TRACKING_URI', 'sqlite:////elsewhere/m.db')
    assert backend.tracking_uri == 'sqlite:////elsewhere/m.db'


def test_other_ranks_are_inert(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1')
    backend = UnoMLflowVisBackend(save_dir=save_dir_of(tmp_path))
    backend.add_config(make_cfg(tmp_path))
    backend.add_scalars({'loss': 1.0}, step=1)
    backend.close()
    assert backend.run_id is None
    assert not (tmp_path / RUN_ID_FILE).exists()
    assert not (tmp_path / 'mlflow.db').exists()


def test_remote_requests_are_bounded_unless_user_chose(tmp_path, monkeypatch,
                                                       store_uri):
    from uno.tracking.mlflow_backend import HTTP_DEFAULTS
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('MLFLOW_HTTP_REQUEST_TIMEOUT', '60')
    backend = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    backend.add_scalars({'loss': 1.0}, step=1)  # initialises the env
    assert os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'] == '60'  # the user's
    assert os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] == '2'
    backend.close()


def test_registry_builds_it(tmp_path):
    cfg = dict(type='UnoMLflowVisBackend', save_dir=str(tmp_path))
    assert isinstance(VISBACKENDS.build(cfg), UnoMLflowVisBackend)
    # what mmengine's Visualizer does under the Runner's default_scope
    with DefaultScope.overwrite_default_scope('uno'):
        backend = MMENGINE_VISBACKENDS.build(dict(cfg))
    assert isinstance(backend, UnoMLflowVisBackend)


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.linear(inputs)  # (B, 1)
        return dict(loss=out.pow(2).mean(), loss_flow=out.abs().mean())


@pytest.fixture
def fresh_singletons():
    """Drop the logger, hub and visualizer a Runner leaves behind."""
    classes = (MMLogger, MessageHub, Visualizer, DefaultScope)
    before = {cls: set(cls._instance_dict) for cls in classes}
    yield
    for cls in classes:
        for name in set(cls._instance_dict) - before[cls]:
            instance = cls._instance_dict.pop(name)
            for handler in getattr(instance, 'handlers', [])[:]:
                handler.close()
                instance.removeHandler(handler)


def test_runner_logs_train_scalars(tmp_path, store_uri, fresh_singletons):
    """The Runner calls add_config, LoggerHook the scalars, close at end."""
    cfg = make_cfg(
        tmp_path / 'wd', train_cfg=dict(by_epoch=False, max_iters=3))
    backend = UnoMLflowVisBackend(tracking_uri=store_uri)
    runner = Runner(
        model=_ToyModel(),
        work_dir=cfg.work_dir,
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(2)) for _ in range(6)],
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        train_cfg=cfg.train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        visualizer=dict(
            type='Visualizer',
            vis_backends=[dict(type='LocalVisBackend'), backend]),
        cfg=cfg)
    runner.train()
    client = mlflow.MlflowClient(store_uri)
    run = client.get_run(backend.run_id)
    assert run.info.run_name == 'uno_mq16'
    assert run.info.status == 'FINISHED'
    assert [s for s, _ in history(client, backend.run_id, 'loss_flow')
            ] == [1, 2, 3]
    assert {'loss', 'lr', 'time', 'data_time'} <= set(run.data.metrics)
    assert not {'iter', 'epoch'} & set(run.data.metrics)


def test_resume_without_checkpoint_starts_a_new_run(tmp_path, store_uri):
    first = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    first.add_config(make_cfg(tmp_path))
    first.add_scalars({'loss/flow': 1.0}, step=1)
    first.close()
    again = UnoMLflowVisBackend(
        save_dir=save_dir_of(tmp_path), tracking_uri=store_uri)
    again.add_config(make_cfg(tmp_path, resume=True))
    assert again.run_id not in (None, first.run_id)
    again.close()
