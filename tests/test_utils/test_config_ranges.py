"""Numeric settings are range-checked before anything is built."""
import pytest
from mmengine import Config

from uno.utils.config_check import check_ranges, validate_config
from uno.errors import UnoConfigError

SMOKE = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
MAIN = 'configs/uno/uno_mot-mini_1xb8-iter600_shapes.py'

# (--cfg-options delta, the words the one-line message must hold)
CASES = [
    ({'optim_wrapper.clip_grad': dict(max_norm=-1.0)},
     'optim_wrapper.clip_grad.max_norm = -1.0: must be a finite number > 0'),
    ({'train_cfg.max_iters': 0}, 'train_cfg.max_iters = 0: must be'),
    ({'train_cfg.max_iters': -5}, 'train_cfg.max_iters = -5'),
    ({'train_cfg.max_iters': 2.5},
     'train_cfg.max_iters = 2.5: must be an integer >= 1'),
    ({'train_cfg.val_interval': 0}, 'train_cfg.val_interval = 0'),
    ({'optim_wrapper.optimizer.lr': 0.0}, 'optim_wrapper.optimizer.lr = 0.0'),
    ({'optim_wrapper.optimizer.lr': float('nan')}, 'lr = nan'),
    ({'objectives.flow.weight': float('nan')},
     'objectives.flow.weight = nan: must be a finite number >= 0'),
    ({'objectives.flow.weight': float('inf')}, 'objectives.flow.weight = inf'),
    ({'randomness': dict(seed=-1)}, 'randomness.seed = -1: must be None or'),
    ({'randomness': dict(seed=2**40)}, 'randomness.seed = 1099511627776'),
    ({'randomness': dict(seed='7')}, "randomness.seed = '7'"),
    ({'default_hooks.logger.interval': 0}, 'default_hooks.logger.interval'),
    ({'default_hooks.checkpoint.max_keep_ckpts': 0}, 'max_keep_ckpts = 0'),
    ({'train_dataloader.batch_size': 0}, 'train_dataloader.batch_size = 0'),
    ({'train_dataloader.dataset.num_samples': 0},
     'train_dataloader.dataset.num_samples = 0'),
    ({'train_dataloader.dataset.image_size': 30},
     'train_dataloader.dataset.image_size = 30 is not a multiple of'),
    ({'model.llm.vocab_size': 16},
     'model.llm.vocab_size = 16 is smaller than tokenizer.vocab_size'),
    ({'model.llm.num_layers': 0}, 'model.llm.num_layers = 0'),
    ({'env_cfg.dist_cfg.timeout': 0}, 'env_cfg.dist_cfg.timeout = 0'),
    ({'train_cfg': dict(_delete_=True, type='EpochBasedTrainLoop',
                        max_epochs=1)},
     "InfiniteSampler' never ends an epoch"),
    ({'optim_wrapper.accumulative_counts': 0},
     'optim_wrapper.accumulative_counts = 0: must be an integer >= 1'),
    ({'optim_wrapper.accumulative_counts': 2,
      'train_cfg': dict(_delete_=True, type='EpochBasedTrainLoop',
                        max_epochs=1)},
     "optim_wrapper.accumulative_counts = 2 needs train_cfg.type = "
     "'IterBasedTrainLoop'"),
    # found by the malformed-input audit of issue #16
    ({'param_scheduler.start_factor': 0.0},
     'param_scheduler.start_factor = 0.0: must be a number in (0, 1]'),
    ({'model.freeze.und': 'maybe'},
     "model.freeze.und = 'maybe': must be True or False"),
    ({'optim_wrapper.clip_grad.norm_type': 'two'},
     "optim_wrapper.clip_grad.norm_type = 'two': must be a number > 0"),
    ({'optim_wrapper.clip_grad.max_nrom': 1.0},
     "unknown key 'max_nrom' at optim_wrapper.clip_grad: did you mean "
     "'max_norm'"),
    ({'env_cfg.mp_cfg.mp_start_method': 'bogus'},
     "env_cfg.mp_cfg.mp_start_method = 'bogus': must be 'fork', 'spawn'"),
    ({'model.latent_encoder.patch_size': 0},
     'model.latent_encoder.patch_size = 0: must be an integer >= 1'),
    ({'train_dataloader.batch_size': 10**8},
     'train_dataloader.batch_size = 100000000 is larger than '
     'train_dataloader.dataset.num_samples'),
]


@pytest.mark.parametrize('delta,words', CASES,
                         ids=[next(iter(d)) for d, _ in CASES])
def test_out_of_range_value_is_one_line_naming_path_and_range(delta, words):
    cfg = Config.fromfile(SMOKE)
    cfg.merge_from_dict(delta)
    with pytest.raises(UnoConfigError) as info:
        validate_config(cfg)
    assert words in str(info.value)
    assert '\n' not in str(info.value)


def test_every_shipped_config_is_in_range():
    import glob
    paths = [p for p in glob.glob('configs/**/*.py', recursive=True) +
             glob.glob('projects/*/configs/**/*.py', recursive=True)
             if '/_base_/' not in p]
    assert SMOKE in paths and MAIN in paths
    for path in paths:
        check_ranges(Config.fromfile(path))  # raises on a bad one


def test_mixture_weights_and_nested_datasets_are_checked():
    cfg = Config.fromfile(MAIN)
    cfg.merge_from_dict({'train_dataloader.dataset.weights.t2i': -0.5})
    with pytest.raises(UnoConfigError,
                       match=r'weights.t2i = -0.5: must be a finite'):
        check_ranges(cfg)
    cfg = Config.fromfile(MAIN)
    name = next(iter(cfg.train_dataloader.dataset.datasets))
    cfg.merge_from_dict(
        {f'train_dataloader.dataset.datasets.{name}.num_samples': 0})
    with pytest.raises(UnoConfigError, match=f'datasets.{name}.num_samples'):
        check_ranges(cfg)


@pytest.mark.parametrize('text,words', [
    ('', 'the config has no model (model = nothing)'),
    ('model = None\n', 'the config has no model'),
    ("model = dict(llm=dict())\n", 'the config has no model'),
    ("model = dict(type='UnoModel')\nobjectives = [dict(type='X')]\n",
     'objectives must be a dict keyed by name'),
    ("model = dict(type='UnoModel')\nobjectives = dict(flow=3)\n",
     'objectives.flow must be a dict'),
    ("model = dict(type='UnoModel')\ntrain_cfg = 5\n",
     'train_cfg must be a dict; got a int'),
    ("model = dict(type='UnoModel')\nparam_scheduler = 5\n",
     'param_scheduler must be a list of dicts or a dict; got a int'),
    ("model = dict(type='UnoModel')\nvisualizer = dict(type='Visualizer', "
     "vis_backends=dict(type='LocalVisBackend'))\n",
     'visualizer.vis_backends must be a list of dicts; got a dict'),
])
def test_config_of_the_wrong_form_is_one_line(tmp_path, text, words):
    path = tmp_path / 'bad.py'
    path.write_text(text)
    with pytest.raises(UnoConfigError) as info:
        validate_config(Config.fromfile(str(path)))
    assert words in str(info.value) and '\n' not in str(info.value)


def test_yaml_config_without_a_model_is_one_line(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('train_cfg:\n  max_iters: 10\n')
    with pytest.raises(UnoConfigError, match='the config has no model'):
        validate_config(Config.fromfile(str(path)))
