"""tools/analysis/report.py on a fabricated sqlite MLflow store."""
import importlib.util
import math
import os
import time

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location(
    'uno_report_tool', os.path.join(REPO, 'tools', 'analysis', 'report.py'))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

KNOB = 'model.metaquery.num_queries'
# config -> (knob, {seed: (geneval/overall, edit/satisfied)})
K_RUNS = {
    'cfg_k16': ('16', {0: (0.5, 0.1), 1: (0.7, 0.1), 2: (0.9, 0.1)}),
    'cfg_k4': ('4', {0: (0.1, 0.3), 1: (0.2, 0.5), 2: (0.3, 0.7)}),
    'cfg_k64': ('64', {0: (0.4, 0.2), 1: (0.6, 0.2)}),
}


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """Experiments ``abl/k`` (knob in params) and ``abl/cap`` (knob from
    a param, the config.py artifact, the config_path file)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    tmp = tmp_path_factory.mktemp('mlflow')
    uri = f'sqlite:///{tmp}/mlflow.db'
    client = MlflowClient(uri)

    def add(exp_id, name, tags, metrics, params=None, start=None):
        run = client.create_run(exp_id, run_name=name, start_time=start)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    exp = client.create_experiment('abl/k', str(tmp / 'art' / 'k'))
    # an older run of cfg_k4 seed 0 that a later one replaces
    add(exp, 'old', dict(config='cfg_k4', seed='0', checkpoint='last'),
        {'geneval/overall': 99.0}, {KNOB: '4'},
        start=int(time.time() * 1000) - 60000)
    for config, (knob, seeds) in K_RUNS.items():
        for seed, (overall, edit) in seeds.items():
            add(exp, f'{config}-s{seed}-eval',
                dict(config=config, seed=str(seed), checkpoint='last'),
                {'geneval/overall': overall, 'edit/satisfied': edit,
                 'geneval/num_images': 12.0, 'loss/flow': 1.0}, {KNOB: knob})
        add(exp, f'{config}-s0', dict(config=config, seed='0'),
            {'geneval/overall': 55.0}, {KNOB: knob})  # a training run
    # a plain tools/test.py run: checkpoint is a path, seed from params
    add(exp, 'cfg_k4-eval', dict(config_path='configs/abl/cfg_k4.py',
                                 checkpoint='/w/abl/cfg_k4/iter_300.pth'),
        {'geneval/overall': 0.25}, {KNOB: '4', 'randomness.seed': '0'})

    cap = client.create_experiment('abl/cap', str(tmp / 'art' / 'cap'))
    cfg_file = tmp / 'configs' / 'abl' / 'z_file.py'
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text('objectives = dict(caption=dict(weight=0.25))\n')
    add(cap, 'z', dict(config_path=str(cfg_file), seed='0',
                       checkpoint='last'), {'edit/satisfied': 0.3})
    add(cap, 'a', dict(config='a_param', seed='0', checkpoint='last'),
        {'edit/satisfied': 0.1}, {'objectives.caption.weight': '1.0'})
    run_id = add(cap, 'm', dict(config='m_artifact', seed='0',
                                checkpoint='last'), {'edit/satisfied': 0.2})
    client.log_text(run_id, 'objectives = dict(caption=dict(weight=2.0))\n',
                    'config.py')
    return uri


def _rows(stdout):
    """Table rows as lists of cells (header and separator dropped)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith('|')]
    return [[c.strip() for c in ln.strip('|').split('|')] for ln in lines]


def test_table_mean_std_over_seeds(store, capsys):
    assert report.main(['--experiments', 'abl/k', '--tracking-uri', store,
                        '--checkpoints', 'last']) == 0
    rows = _rows(capsys.readouterr().out)
    # default metrics: benchmark metrics only, counts and losses left out
    assert rows[0] == ['config', 'n', 'geneval/overall', 'edit/satisfied']
    assert rows[2:] == [
        ['cfg_k16', '3', '0.7000 ± 0.2000', '0.1000 ± 0.0000'],
        ['cfg_k4', '3', '0.2000 ± 0.1000', '0.5000 ± 0.2000'],
        ['cfg_k64', '2', '0.5000 ± 0.1414', '0.2000 ± 0.0000'],
    ]


def test_knob_orders_rows_and_plots(store, tmp_path, capsys):
    out = tmp_path / 'out'
    assert report.main(['--experiments', 'abl/k', '--tracking-uri', store,
                        '--metrics', 'geneval/overall', '--knob', KNOB,
                        '--out', str(out), '--checkpoints', 'last']) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ['config', KNOB, 'n', 'geneval/overall']
    knobs = [r[:2] for r in rows[2:]]
    assert knobs == [['cfg_k4', '4'], ['cfg_k16', '16'], ['cfg_k64', '64']]
    md = (out / 'k.md').read_text()
    assert '| cfg_k4 | 4 | 3 | 0.2000 ± 0.1000 |' in md
    png = (out / 'k.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_rows_checkpoints_and_single_seed(store, capsys):
    assert report.main(['--experiments', 'abl/k', '--tracking-uri', store,
                        '--metrics', 'geneval/overall', 'edit/satisfied',
                        '--rows', 'cfg_k64', 'cfg_k4']) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0][:3] == ['config', 'checkpoint', 'n']
    assert rows[2:] == [
        ['cfg_k64', 'last', '2', '0.5000 ± 0.1414', '0.2000 ± 0.0000'],
        ['cfg_k4', 'iter_300', '1', '0.2500', '–'],
        ['cfg_k4', 'last', '3', '0.2000 ± 0.1000', '0.5000 ± 0.2000'],
    ]


def test_knob_from_param_artifact_and_config_file(store, tmp_path, capsys):
    assert report.main(['--experiments', 'abl/cap', '--tracking-uri', store,
                        '--knob', 'objectives.caption.weight',
                        '--out', str(tmp_path), '--name', 'cap']) == 0
    rows = _rows(capsys.readouterr().out)
    knobs = [r[:2] for r in rows[2:]]
    assert knobs == [['z_file', '0.25'], ['a_param', '1.0'],
                     ['m_artifact', '2.0']]
    assert (tmp_path / 'cap.md').is_file() and (tmp_path / 'cap.png').is_file()


@pytest.mark.parametrize('argv, words', [
    (['--experiments', 'nope'], ['no experiment nope', 'abl/cap', 'abl/k']),
    (['--experiments', 'abl/k', '--checkpoints', 'iter_9'],
     ['no evaluation runs', 'experiments: ', 'abl/k']),
    (['--experiments', 'abl/k', '--metrics', 'geneval/overal'],
     ['geneval/overal', 'geneval/overall']),
    (['--experiments', 'abl/k', '--rows', 'cfg_k5'], ['cfg_k5', 'cfg_k16']),
])
def test_errors_are_one_line(store, capsys, argv, words):
    assert report.main(argv + ['--tracking-uri', store]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: ')
    for word in words:
        assert word in err


def test_missing_store(tmp_path, capsys):
    uri = f'sqlite:///{tmp_path}/none.db'
    assert report.main(['--experiments', 'x', '--tracking-uri', uri]) == 2
    assert 'no MLflow store' in capsys.readouterr().err
    assert not (tmp_path / 'none.db').exists()


def test_mean_std():
    mean, std = report.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(1.2909944)
    assert math.isnan(report.mean_std([3.0])[1])
