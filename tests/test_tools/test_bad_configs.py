"""Malformed configs fail with one clear line, as a user would see them.

Each case writes a small config to a temporary folder (``_base_`` pointing
at the smoke or the UNO config by absolute path) or passes a
``--cfg-options`` override, runs ``tools/train.py``'s ``main`` in-process
with those arguments, and expects exit status 2 with exactly one
non-empty line on stderr that starts with ``error: `` and names the key,
the type and the fix, without a traceback. One case and ``--debug`` (which
shows the traceback) run as real processes, for the CLI contract itself.

Most cases fail while the config is loaded and validated; a few build the
model or run one step.
"""
import os
import os.path as osp
import subprocess
import sys
import textwrap
from typing import NamedTuple, Optional, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import Registry

from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool
from uno.registry import OBJECTIVES
from uno.utils.config_check import config_build_errors, validate_config
from uno.errors import UnoConfigError

SMOKE = osp.join(REPO,
                 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py')
UNO = osp.join(REPO, 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py')
ON_CPU = not torch.cuda.is_available()
# a short run whenever a case gets as far as training
FAST = ('train_cfg.max_iters=1', 'train_cfg.val_interval=1000',
        'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1')


class Case(NamedTuple):
    """One malformed config and what its error line must contain.

    ``{tmp}`` in ``body``, ``options``, ``args`` and ``config`` is the
    case's temporary folder.
    """
    id: str
    stage: str  # where it fails: load, validate, build (or lazy build), step
    expect: Tuple[str, ...]
    body: str = ''  # config lines below ``_base_``
    options: Tuple[str, ...] = ()  # --cfg-options
    args: Tuple[str, ...] = ()  # other command-line arguments
    base: Optional[str] = SMOKE  # None: ``body`` is the whole file
    config: Optional[str] = None  # a path instead of the written file
    cpu_only: bool = False  # the config is valid where CUDA is
    suffix: str = '.py'  # of the written config file
    files: Tuple[Tuple[str, bytes], ...] = ()  # (path, bytes) written first


CASES = [
    Case('unknown-top-level-key', 'validate',
         ("unknown top-level config key 'optim_wraper'", "'optim_wrapper'"),
         body="optim_wraper = dict(type='OptimWrapper')"),
    Case('unknown-objective-type', 'validate',
         ("unknown type 'FlowMatching'", 'objectives.flow.type',
          "'FlowMatchingObjective'"),
         body="objectives = dict(flow=dict(type='FlowMatching'))"),
    Case('unknown-objective-argument', 'validate',
         ("unknown argument 'shfit'", 'FlowMatchingObjective',
          'objectives.flow', "'shift'"),
         options=('objectives.flow.shfit=3.0', )),
    Case('unknown-model-subkey', 'validate',
         ("unknown key 'hiden_size'", 'model.llm', "'hidden_size'"),
         options=('model.llm.hiden_size=64', )),
    Case('unknown-freeze-part', 'validate',
         ("'lm_haed'", 'model.freeze', "'lm_head'"),
         options=('model.freeze.lm_haed=True', )),
    Case('unknown-attention-backend', 'validate',
         ("unknown type 'flexx'", 'model.attention.type', "'flex'"),
         options=('model.attention.type=flexx', )),
    Case('batch-size-is-a-str', 'validate',
         ('train_dataloader.batch_size', "'eight'", 'int'),
         options=('train_dataloader.batch_size=eight', )),
    Case('objective-weight-is-a-str', 'validate',
         ('objectives.flow.weight', "'heavy'", 'float'),
         options=('objectives.flow.weight=heavy', )),
    Case('num-layers-is-a-float', 'validate',
         ('model.llm.num_layers', '2.5', 'int'),
         options=('model.llm.num_layers=2.5', )),
    Case('negative-objective-weight', 'validate',
         ('objectives.flow.weight = -1.0', 'must be a finite number >= 0'),
         options=('objectives.flow.weight=-1.0', )),
    Case('negative-num-queries', 'build',
         ('model.metaquery.num_queries', '>= 0'),
         options=('model.metaquery.num_queries=-1', )),
    Case('regression-without-metaqueries', 'build',
         ('VisualRegressionObjective needs metaqueries',
          'model.metaquery.num_queries > 0'),
         base=UNO, options=('model.metaquery.num_queries=0', )),
    Case('caption-without-flow', 'build',
         ('objectives need noisy latents',
          'add a flow objective (weight 0 allowed)', 'objectives.caption'),
         body="""\
             objectives = dict(
                 _delete_=True,
                 caption=dict(type='CaptioningObjective', weight=1.0))"""),
    Case('missing-base-file', 'load', ('nope_base.py', ),
         body="_base_ = ['{tmp}/nope_base.py']", base=None),
    Case('missing-config-file', 'load', ('{tmp}/nope.py', 'does not exist'),
         config='{tmp}/nope.py'),
    Case('resume-missing-checkpoint', 'load', ('--resume', '{tmp}/nope.pth'),
         args=('--resume', '{tmp}/nope.pth')),
    Case('load-from-missing-checkpoint', 'validate',
         ('load_from', '{tmp}/nope.pth'),
         options=('load_from={tmp}/nope.pth', )),
    Case('xformers-on-cpu', 'build', ("'xformers' attention backend", 'CUDA'),
         options=('model.attention.type=xformers', ), cpu_only=True),
    Case('flex-training-on-cpu', 'step',
         ("'flex' attention backend", 'CPU', "type='sdpa'"),
         options=('model.attention.type=flex', ) + FAST, cpu_only=True),
    Case('unknown-dataset-type', 'validate',
         ("unknown type 'ShapesWorldT2I'", 'train_dataloader.dataset.type',
          "'ShapesWorldT2IDataset'"),
         options=('train_dataloader.dataset.type=ShapesWorldT2I', )),
    Case('unknown-transform', 'validate',
         ("unknown type 'CenterCrp'",
          'train_dataloader.dataset.pipeline.0.type', "'CenterCrop'"),
         body="""\
             train_dataloader = dict(dataset=dict(
                 _delete_=True, type='ImageCaptionDataset',
                 ann_file='{tmp}/ann.jsonl',
                 pipeline=[dict(type='CenterCrp', size=32)]))"""),
    Case('unknown-sampler', 'validate',
         ("unknown type 'InfiniteSamplr'", 'train_dataloader.sampler.type',
          "'InfiniteSampler'"),
         options=('train_dataloader.sampler.type=InfiniteSamplr', )),
    Case('unknown-custom-hook', 'validate',
         ("unknown type 'BenchmarkGridHok'", 'custom_hooks.0.type',
          "'BenchmarkGridHook'"),
         body="custom_hooks = [dict(type='BenchmarkGridHok')]"),
    Case('unknown-vis-backend', 'validate',
         ("unknown type 'MLflowVisBakend'", 'visualizer.vis_backends.1.type',
          "'UnoMLflowVisBackend'"),
         body="""\
             visualizer = dict(vis_backends=[
                 dict(type='LocalVisBackend'),
                 dict(type='MLflowVisBakend')])"""),
    Case('timestep-window-lo-above-hi', 'build',
         ('objectives.caption', 'timestep_window', 'lo <= hi'),
         base=UNO, options=('objectives.caption.timestep_window=(0.8,0.2)', )),
    Case('unknown-benchmark-sampler-argument', 'validate',
         ("'benchmark.sampler.num_step'", 'FlowSampler', "'num_steps'"),
         options=('benchmark.sampler.num_step=10', )),
    Case('syntax-error', 'load', ('cannot parse', 'SyntaxError'),
         body='model = dict(', base=None),
    Case('hidden-size-not-divisible-by-heads', 'build',
         ('model.llm.hidden_size=66', 'num_heads=4'),
         options=('model.llm.hidden_size=66', )),
    Case('unknown-optimizer', 'validate',
         ("unknown type 'AdamWW'", 'optim_wrapper.optimizer.type',
          "'AdamW'"),
         options=('optim_wrapper.optimizer.type=AdamWW', )),
    Case('unknown-scheduler-argument', 'build',
         ('cannot build LinearLR at param_scheduler', "'start_facter'",
          "did you mean 'start_factor'"),
         options=('param_scheduler.start_facter=0.5', ) + FAST),
]
# the classes of bad input of the reliability issue (#16): each is one
# line naming the path, the value or the file, and exit status 2
CKPT = '{tmp}/ckpt'
CASES += [
    Case('yaml-without-model', 'validate',
         ("unknown top-level config key 'foo'", ),
         body='foo: 1', base=None, suffix='.yaml'),
    Case('empty-config-file', 'validate', ('model',), base=None),
    Case('model-is-none', 'validate', ('model',), body='model = None'),
    Case('objectives-as-a-list', 'validate', ('objectives',),
         body="objectives = [dict(type='FlowMatchingObjective')]"),
    Case('negative-seed', 'validate', ('seed', '-1'), args=('--seed', '-1')),
    Case('huge-seed', 'validate', ('randomness.seed', '4294967295'),
         options=('randomness.seed=99999999999999', )),
    Case('seed-is-a-str', 'validate', ('randomness.seed', "'abc'"),
         options=('randomness.seed=abc', )),
    Case('negative-clip-norm', 'validate',
         ('optim_wrapper.clip_grad.max_norm', '> 0'),
         options=('optim_wrapper.clip_grad.max_norm=-1.0', )),
    Case('zero-max-iters', 'validate', ('train_cfg.max_iters', '>= 1'),
         options=('train_cfg.max_iters=0', )),
    Case('nan-objective-weight', 'validate',
         ('objectives.flow.weight', 'finite'),
         body="objectives = dict(flow=dict(weight=float('nan')))"),
    Case('zero-learning-rate', 'validate',
         ('optim_wrapper.optimizer.lr', '> 0'),
         options=('optim_wrapper.optimizer.lr=0', )),
    Case('checkpoint-interval-zero', 'validate',
         ('default_hooks.checkpoint.interval', '>= 1'),
         options=('default_hooks.checkpoint.interval=0', )),
    Case('empty-dataset', 'validate', ('num_samples', '>= 1'),
         options=('train_dataloader.dataset.num_samples=0', )),
    Case('image-size-not-divisible', 'validate', ('image_size', '30'),
         options=('train_dataloader.dataset.image_size=30', )),
    Case('vocabulary-below-the-tokenizer', 'validate',
         ('model.llm.vocab_size', '128'),
         options=('model.llm.vocab_size=16', )),
    Case('gradient-accumulation-per-epoch', 'validate',
         ('optim_wrapper.accumulative_counts = 2', 'IterBasedTrainLoop'),
         body="train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', "
              'max_epochs=1)',
         options=('optim_wrapper.accumulative_counts=2', )),
    Case('pytorch-launcher-without-torchrun', 'load',
         ('--launcher pytorch', 'torchrun'), args=('--launcher', 'pytorch')),
    Case('amp-on-a-cpu', 'build', ('AmpOptimWrapper', 'GPU'),
         options=('optim_wrapper.type=AmpOptimWrapper', ), cpu_only=True),
    Case('missing-custom-import', 'load', ('no_such_module_uno', ),
         body="custom_imports = dict(imports=['no_such_module_uno'])"),
    Case('missing-annotation-file', 'validate', ('{tmp}/ann.jsonl', ),
         body="""\
             train_dataloader = dict(dataset=dict(
                 _delete_=True, type='ImageCaptionDataset',
                 ann_file='{tmp}/ann.jsonl'))"""),
    Case('folder-as-annotation-file', 'validate', ('{tmp}', 'folder'),
         body="""\
             train_dataloader = dict(dataset=dict(
                 _delete_=True, type='ImageCaptionDataset',
                 ann_file='{tmp}'))"""),
    Case('load-from-an-empty-folder', 'build', ('{tmp}/ckpt', ),
         options=(f'load_from={CKPT}', ), files=((f'{CKPT}/', b''), )),
    Case('load-from-a-zero-byte-file', 'build', ('{tmp}/ckpt.pth', ),
         options=(f'load_from={CKPT}.pth', ), files=((f'{CKPT}.pth', b''), )),
    Case('load-from-random-bytes', 'build', ('{tmp}/ckpt.pth', ),
         options=(f'load_from={CKPT}.pth', ),
         files=((f'{CKPT}.pth', bytes(range(256)) * 8), )),
    Case('resume-a-dangling-last-checkpoint', 'build',
         ('{tmp}/work/last_checkpoint names', 'iter_9.pth',
          'does not exist'), args=('--resume', ),
         files=(('{tmp}/work/last_checkpoint', b'{tmp}/work/iter_9.pth'), )),
    Case('adamw-betas-of-one', 'build', ('AdamW', 'optim_wrapper'),
         options=('optim_wrapper.optimizer.betas=(0.9,)', ) + FAST),
    Case('unknown-env-cfg-key', 'validate',
         ("unknown key 'cudnn_benchmrk' at env_cfg", "'cudnn_benchmark'"),
         options=('env_cfg.cudnn_benchmrk=True', )),
    Case('slurm-launcher-outside-slurm', 'load',
         ('--launcher slurm', 'SLURM_PROCID'), args=('--launcher', 'slurm')),
    Case('mpi-launcher-outside-mpirun', 'load',
         ('--launcher mpi', 'OMPI_COMM_WORLD_LOCAL_RANK'),
         args=('--launcher', 'mpi')),
    Case('train-dataloader-none', 'validate',
         ('train_dataloader = None', 'optim_wrapper'),
         body='train_dataloader = None'),
    Case('freeze-is-a-str', 'validate', ('model.freeze must be a dict', ),
         options=('model.freeze=yes', )),
    Case('seed-not-an-int-on-the-command-line', 'load',
         ("argument --seed: invalid int value: 'abc'", '--help'),
         args=('--seed', 'abc')),
    Case('work-dir-under-a-file', 'build', ('{tmp}/afile/work',
                                            'not writable'),
         args=('--work-dir', '{tmp}/afile/work'),
         files=(('{tmp}/afile', b'a file'), )),
]


def _weights_only() -> bytes:
    import io
    buf = io.BytesIO()
    torch.save(dict(state_dict={'model.x': torch.zeros(1)}), buf)
    return buf.getvalue()


CASES += [  # found by the malformed-input audit of issue #16
    Case('vit-heads-not-dividing-width', 'build',
         ('cannot build', 'at model.und_encoder', '(AssertionError)',
          'divisible by num_heads'),
         base=UNO, options=('model.und_encoder.config.embed_dim=62', )),
    Case('timestep-window-of-three', 'build',
         ('objectives.caption', 'timestep_window must be two numbers'),
         base=UNO,
         options=('objectives.caption.timestep_window=(0.1,0.2,0.3)', )),
    Case('benchmark-task-of-zero-samples', 'validate',
         ('test_dataloader.dataset.tasks.caption.num_samples = 0',
          'leave a task out'), base=UNO,
         options=('test_dataloader.dataset.tasks.caption.num_samples=0', )),
    Case('vis-backends-a-dict', 'validate',
         ('visualizer.vis_backends must be a list of dicts', ),
         body="visualizer = dict(_delete_=True, type='Visualizer', "
              "vis_backends=dict(type='LocalVisBackend'))"),
    Case('resume-from-weights-only-file', 'build',
         ('{tmp}/w.pth', 'weights only', 'load_from'),
         args=('--resume', '{tmp}/w.pth'),
         files=(('{tmp}/w.pth', _weights_only()), )),
]
DEBUG = Case('debug-shows-traceback', 'validate',
             ('Traceback', 'UnoConfigError', 'wieght'),
             options=('objectives.flow.wieght=0.5', ), args=('--debug', ))


def _fill(text: str, tmp: str) -> str:
    return text.replace('{tmp}', tmp)


def _argv(case: Case, tmp: str) -> list:
    """Write the case's files and config; the arguments of tools/train.py
    (a later ``--work-dir`` in ``case.args`` wins)."""
    for path, data in case.files:
        path = _fill(path, tmp)
        if path.endswith('/'):
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(_fill(data.decode(), tmp).encode() if data.isascii()
                    else data)
    if case.config:
        config = _fill(case.config, tmp)
    else:
        config = osp.join(tmp, 'bad_config' + case.suffix)
        lines = [] if case.base is None else [f'_base_ = [{case.base!r}]']
        lines.append(_fill(textwrap.dedent(case.body), tmp))
        with open(config, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    argv = [config, '--work-dir', osp.join(tmp, 'work')]
    argv += [_fill(a, tmp) for a in case.args]
    if case.options:
        argv += ['--cfg-options'] + [_fill(o, tmp) for o in case.options]
    return argv


def _check_one_line(case: Case, code, stderr: str, tmp: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith('error: '), lines[0]
    for fragment in case.expect:
        assert _fill(fragment, tmp) in lines[0], lines[0]
    assert 'Traceback' not in stderr


@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_bad_config_is_one_clear_line(case, tmp_path, monkeypatch, capsys):
    """In-process: ``tools/train.py``'s ``main`` as the CLI calls it."""
    if case.cpu_only and not ON_CPU:
        pytest.skip('valid where CUDA is available')
    tmp = str(tmp_path)
    monkeypatch.setenv('MLFLOW_TRACKING_URI', mlflow_store(tmp_path / 'm.db'))
    code, _, err = run_tool('train', _argv(case, tmp), monkeypatch, capsys)
    _check_one_line(case, code, err, tmp)


@pytest.mark.slow
def test_cli_contract_in_a_real_process(tmp_path):
    """The one-line contract holds for a real process (nothing printed at
    import)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'm.db'),
               OMP_NUM_THREADS='1')
    res = subprocess.run(
        [sys.executable, 'tools/train.py'] + _argv(CASES[0], str(tmp_path)),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    _check_one_line(CASES[0], res.returncode, res.stderr, str(tmp_path))


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', mlflow_store(tmp_path / 'm.db'))
    code, _, err = run_tool('train', _argv(DEBUG, str(tmp_path)),
                            monkeypatch, capsys)
    assert code != 0
    for fragment in DEBUG.expect:
        assert fragment in err, err[-3000:]


def test_value_checks_accept_valid_values():
    """Ints for floats, whole floats for ints, None anywhere."""
    cfg = Config.fromfile(SMOKE)
    cfg.merge_from_dict({
        'objectives.flow.weight': 2,
        'model.llm.num_layers': 2.0,
        'model.llm.qkv_bias': 0,
        'train_dataloader.shuffle': None,
        'train_dataloader.persistent_workers': False,
        'optim_wrapper.optimizer.lr': 1,
        'optim_wrapper.clip_grad': dict(type='value', clip_value=1.0),
    })
    validate_config(cfg)


def test_build_errors_name_the_component():
    """Found from the traceback, not by patching mmengine."""
    cfg = Config.fromfile(UNO)
    bad = dict(cfg.objectives.caption, timestep_window=(0.8, 0.2))
    original = Registry.build
    with pytest.raises(UnoConfigError) as info:
        with config_build_errors(lambda: cfg):
            assert Registry.build is original
            OBJECTIVES.build(bad)
    with pytest.raises(ValueError) as outside:  # not in a build
        with config_build_errors(lambda: cfg):
            int('x')
    assert str(info.value).startswith(
        'cannot build CaptioningObjective at objectives.caption '
        '(ValueError): timestep_window must satisfy')
    assert type(outside.value) is ValueError
    with pytest.raises(ValueError) as plain:  # outside: untouched
        OBJECTIVES.build(bad)
    assert not isinstance(plain.value, UnoConfigError)
