import textwrap

import pytest
from mmengine.config import Config
from mmengine.registry import Registry

from uno.registry import (DATASETS, FUNCTIONS, HOOKS, MODELS, OBJECTIVES,
                          TRANSFORMS)
from uno.utils import config_check
from uno.utils.config_check import check_components, validate_config
from uno.utils.config_diff import MISSING, config_diff
from uno.errors import UnoConfigError


class ToyFlowObjective:

    def __init__(self, weight=1.0, loss='mse'):
        self.weight = weight


class ToyModel:
    config_schema = {'llm': ('hidden_size', 'num_layers')}

    def __init__(self, llm=None, num_queries=0):
        self.llm = llm


class ToyKwargsDataset:

    def __init__(self, root='', **kwargs):
        self.kwargs = kwargs


class ToyTransform:

    def __init__(self, size=8):
        self.size = size


class ToyHook:

    def __init__(self, interval=1):
        self.interval = interval


def toy_collate(batch, pad_id=0):
    return batch


_TOYS = [(OBJECTIVES, ToyFlowObjective), (MODELS, ToyModel),
         (DATASETS, ToyKwargsDataset), (TRANSFORMS, ToyTransform),
         (HOOKS, ToyHook), (FUNCTIONS, toy_collate)]


@pytest.fixture(autouse=True)
def toys():
    for registry, obj in _TOYS:
        registry.register_module(module=obj, force=True)
    yield
    for registry, obj in _TOYS:
        registry._module_dict.pop(obj.__name__, None)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


BASE = """\
    _lr = 1e-3
    work_dir = './work_dirs/toy'
    model = dict(type='ToyModel', llm=dict(hidden_size=32, num_layers=2))
    objectives = dict(
        flow=dict(type='ToyFlowObjective', weight=1.0),
        cap=dict(type='ToyFlowObjective', weight=1.0, loss='ce'))
    train_dataloader = dict(
        batch_size=2,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        collate_fn=dict(type='toy_collate', pad_id=0),
        dataset=dict(
            type='ToyKwargsDataset',
            anything=1,
            pipeline=[dict(type='ToyTransform', size=8)]))
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=10)
    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=_lr, weight_decay=0.0),
        paramwise_cfg=dict(norm_decay_mult=0.0))
    param_scheduler = [dict(type='LinearLR', start_factor=0.1)]
    default_hooks = dict(toy=dict(type='ToyHook', interval=5, priority=50))
    custom_hooks = [dict(type='CheckpointHook', interval=5)]
    visualizer = dict(
        type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    """


@pytest.fixture
def base_cfg(tmp_path):
    return _write(tmp_path, 'base.py', BASE)


def _load(tmp_path, base_cfg, delta):
    text = "_base_ = './base.py'\n" + textwrap.dedent(delta)
    return Config.fromfile(_write(tmp_path, 'delta.py', text))


def _error(cfg):
    with pytest.raises(UnoConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_valid_config_passes(base_cfg):
    # also covers mmengine names through uno's child registries:
    # InfiniteSampler, IterBasedTrainLoop, OptimWrapper, AdamW, LinearLR,
    # CheckpointHook, Visualizer, LocalVisBackend
    assert validate_config(Config.fromfile(base_cfg)) is None


def test_misspelt_top_level_key(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg, 'optim_wraper = dict(clip_grad=None)\n')
    assert _error(cfg) == ("unknown top-level config key 'optim_wraper': "
                           "did you mean 'optim_wrapper'?")


def test_private_variable_allowed(tmp_path, base_cfg):
    cfg = _load(
        tmp_path, base_cfg, """\
        _mine = dict(type='NotRegisteredAnywhere')
        objectives = dict(flow=dict(weight=0.5))
        """)
    assert cfg._mine == dict(type='NotRegisteredAnywhere')
    validate_config(cfg)


def test_unknown_type_with_close_match(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg,
                "objectives = dict(flow=dict(type='ToyFlowObjectiv'))\n")
    assert _error(cfg).startswith(
        "unknown type 'ToyFlowObjectiv' at objectives.flow.type "
        "(registry 'uno.objective'): did you mean 'ToyFlowObjective'")


def test_unknown_type_in_nested_pipeline(tmp_path, base_cfg):
    cfg = _load(
        tmp_path, base_cfg, """\
        train_dataloader = dict(dataset=dict(
            _delete_=True, type='ToyKwargsDataset',
            dataset=dict(type='ToyKwargsDataset',
                         pipeline=[dict(type='ToyTransfrom')])))
        """)
    assert _error(cfg).startswith(
        "unknown type 'ToyTransfrom' at "
        'train_dataloader.dataset.dataset.pipeline.0.type '
        "(registry 'uno.transform'): did you mean 'ToyTransform'")


def test_unknown_type_at_unmapped_path(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg,
                "strategy = dict(toy=dict(type='LocalVisBakend'))\n")
    assert _error(cfg).startswith(
        "unknown type 'LocalVisBakend' at strategy.toy.type "
        "(any registry): did you mean 'LocalVisBackend'")


def test_unknown_argument(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg,
                'objectives = dict(flow=dict(wieght=0.5))\n')
    assert _error(cfg) == ("unknown argument 'wieght' of ToyFlowObjective "
                           "at objectives.flow: did you mean 'weight'?")


def test_unknown_argument_of_mmengine_component(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg, 'train_cfg = dict(max_iter=5)\n')
    assert _error(cfg).startswith(
        "unknown argument 'max_iter' of IterBasedTrainLoop at train_cfg: "
        "did you mean 'max_iters'")


def test_unknown_argument_of_the_accumulating_loop():
    import os.path as osp

    from tests.conftest import REPO
    from uno.engine import AccumulatingTrainLoop  # noqa: F401 (registers)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'))
    cfg.train_cfg = dict(type='AccumulatingTrainLoop', max_iter=5)
    with pytest.raises(UnoConfigError, match="unknown argument 'max_iter' "
                       "of AccumulatingTrainLoop at train_cfg: did you mean "
                       "'max_iters'"):
        validate_config(cfg)


def test_function_skips_first_positional(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg,
                'train_dataloader = dict(collate_fn=dict(batch=1))\n')
    assert _error(cfg).startswith("unknown argument 'batch' of toy_collate at "
                                  'train_dataloader.collate_fn')


def test_nested_typo_via_config_schema(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg, 'model = dict(llm=dict(hiden_size=8))\n')
    assert _error(cfg) == ("unknown key 'hiden_size' at model.llm: "
                           "did you mean 'hidden_size'?")


def test_kwargs_class_accepts_anything(tmp_path, base_cfg):
    cfg = _load(tmp_path, base_cfg,
                'train_dataloader = dict(dataset=dict(whatever=3))\n')
    validate_config(cfg)


def test_builder_keys_accepted(tmp_path, base_cfg):
    """Keys a builder pops (a hook's priority) are no class argument."""
    cfg = _load(
        tmp_path, base_cfg, """\
        custom_hooks = [dict(type='ToyHook', interval=2, priority='LOW')]
        param_scheduler = [
            dict(type='LinearLR', start_factor=0.1,
                 convert_to_iter_based=True)]
        """)
    validate_config(cfg)
    cfg.custom_hooks[0]['prority'] = cfg.custom_hooks[0].pop('priority')
    assert _error(cfg) == ("unknown argument 'prority' of ToyHook at "
                           "custom_hooks.0: did you mean 'priority'?")


def test_class_as_type_accepted():
    cfg = Config(dict(objectives=dict(flow=dict(type=ToyFlowObjective))))
    check_components(cfg)
    cfg.objectives.flow.weigth = 1.0
    with pytest.raises(UnoConfigError, match="did you mean 'weight'"):
        check_components(cfg)


def test_config_diff(tmp_path, base_cfg):
    base = Config.fromfile(base_cfg)
    delta = _load(
        tmp_path, base_cfg, """\
        _lr = 5.0
        model = dict(num_queries=4)
        objectives = dict(
            cap=dict(_delete_=True, type='ToyFlowObjective', weight=0.0),
            reg=dict(type='ToyFlowObjective'))
        train_dataloader = dict(
            dataset=dict(pipeline=[dict(type='ToyTransform', size=16)]))
        """)
    assert config_diff(base, delta) == [
        ('model.num_queries', MISSING, 4),
        ('objectives.cap.loss', 'ce', MISSING),
        ('objectives.cap.weight', 1.0, 0.0),
        ('objectives.reg.type', MISSING, 'ToyFlowObjective'),
        ('train_dataloader.dataset.pipeline.0.size', 8, 16),
    ]
    assert config_diff(base, base) == []


def test_bad_type_value_and_broken_location(monkeypatch):
    with pytest.raises(UnoConfigError, match=r'objectives\.flow\.type must'):
        check_components(Config(dict(objectives=dict(flow=dict(type=3)))))
    broken = Registry('broken', scope='uno', locations=['uno_no_such_pkg'])
    slots = {'objectives.*': (broken, )}
    monkeypatch.setattr(config_check, 'SLOTS', slots)
    cfg = Config(dict(objectives=dict(flow=dict(type='ToyFlowObjective'))))
    with pytest.raises(UnoConfigError, match="'uno.broken' failed to import"):
        check_components(cfg)
