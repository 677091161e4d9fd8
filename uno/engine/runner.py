"""Build mmengine's Runner from a uno config.

A uno config keeps the model and the objectives apart (``model=...``,
``objectives=dict(flow=..., caption=...)``) so that an ablation overrides
``objectives.caption.weight`` without touching the model. This module
validates the config, joins both into the :class:`UnoTrainer` the Runner
drives, and hands the *original* config to the Runner, so what is dumped to
the work dir and logged to MLflow is what the user wrote.
"""
import copy
import inspect

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from uno.registry import DATASETS, FUNCTIONS, MODEL_WRAPPERS
from uno.utils.errors import UnoConfigError

DEFAULT_CONSTRUCTOR = 'TrainableOnlyOptimWrapperConstructor'


def build_runner(cfg: Config) -> Runner:
    """Validate ``cfg`` and build the Runner.

    Raises:
        UnoConfigError: on an unknown key, type or argument.
    """
    from uno.utils.config_check import validate_config
    validate_config(cfg)
    _check_benchmark(cfg.get('benchmark') or {})
    cfg = copy.deepcopy(cfg)
    uno = plan_options(cfg)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key):
            _inject_plan_options(cfg[key].get('dataset'), uno, key)
    trainer = dict(
        type='UnoTrainer',
        model=cfg.model,
        objectives=cfg.objectives,
        seed=cfg.get('randomness', {}).get('seed') or 0,
        tokenizer=cfg.get('tokenizer'),
        **(cfg.get('benchmark') or {}))
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is not None:
        optim_wrapper = copy.deepcopy(optim_wrapper)
        optim_wrapper.setdefault('constructor', DEFAULT_CONSTRUCTOR)
    env_cfg = copy.deepcopy(cfg.get('env_cfg', {}))
    env_cfg.setdefault('dist_cfg', {}).setdefault(
        'backend', 'nccl' if torch.cuda.is_available() else 'gloo')
    return UnoRunner(
        model=trainer,
        work_dir=cfg.work_dir,
        train_dataloader=_resolve_collate(cfg.get('train_dataloader')),
        val_dataloader=_resolve_collate(cfg.get('val_dataloader')),
        test_dataloader=_resolve_collate(cfg.get('test_dataloader')),
        train_cfg=cfg.get('train_cfg'),
        val_cfg=cfg.get('val_cfg'),
        test_cfg=cfg.get('test_cfg'),
        auto_scale_lr=cfg.get('auto_scale_lr'),
        optim_wrapper=optim_wrapper,
        param_scheduler=cfg.get('param_scheduler'),
        val_evaluator=cfg.get('val_evaluator'),
        test_evaluator=cfg.get('test_evaluator'),
        default_hooks=cfg.get('default_hooks'),
        custom_hooks=cfg.get('custom_hooks'),
        load_from=cfg.get('load_from'),
        resume=cfg.get('resume', False),
        launcher=cfg.get('launcher', 'none'),
        env_cfg=env_cfg,
        log_processor=cfg.get('log_processor'),
        log_level=cfg.get('log_level', 'INFO'),
        visualizer=cfg.get('visualizer'),
        default_scope=cfg.get('default_scope', 'uno'),
        randomness=cfg.get('randomness', dict(seed=None)),
        experiment_name=cfg.get('experiment_name'),
        cfg=cfg)


class UnoRunner(Runner):
    """mmengine's Runner, with uno's DDP and CPU distributed set-up.

    mmengine resolves ``model_wrapper_cfg.type`` in its root registry
    only; uno's wrapper (the default under a launcher) is resolved here.
    Under torchrun on a CPU-only machine the gloo process group is started
    here, since mmengine's launcher assumes CUDA.
    """

    def setup_env(self, env_cfg: dict) -> None:
        # mmengine's 'pytorch' launcher calls torch.cuda.set_device, which
        # fails without a GPU; on CPU start the process group (gloo, from
        # torchrun's environment) first, and mmengine keeps it
        import torch.distributed as dist
        if (self.distributed and self.launcher == 'pytorch'
                and not dist.is_initialized()
                and not torch.cuda.is_available()):
            backend = env_cfg.get('dist_cfg', {}).get('backend', 'gloo')
            dist.init_process_group(backend=backend)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        from mmengine.dist import is_distributed
        if model_wrapper_cfg is None and is_distributed():
            model_wrapper_cfg = dict(type='UnoDistributedDataParallel')
        if model_wrapper_cfg is not None:
            model_wrapper_cfg = copy.deepcopy(model_wrapper_cfg)
            name = model_wrapper_cfg.get('type')
            if isinstance(name, str) and name in MODEL_WRAPPERS:
                # the scoped name makes mmengine's root lookup (and its
                # build) descend into uno's child registry
                model_wrapper_cfg['type'] = f'uno.{name}'
        return super().wrap_model(model_wrapper_cfg, model)


def _resolve_collate(dataloader):
    """Replace a uno collate function name by the function itself.

    mmengine's Runner looks collate functions up in its *root* FUNCTIONS
    registry only, which does not see uno's child registry.
    """
    if not dataloader or 'collate_fn' not in dataloader:
        return dataloader
    dataloader = copy.deepcopy(dataloader)
    collate = dataloader['collate_fn']
    name = collate.get('type')
    if isinstance(name, str) and name in FUNCTIONS:
        collate['type'] = FUNCTIONS.get(name)
    return dataloader


def plan_options(cfg) -> dict:
    """UNO segments the configured objectives ask the data for."""
    from uno.objectives import ObjectiveSet
    opts = ObjectiveSet.plan_options(cfg.get('objectives') or {})
    k = (cfg.model.get('metaquery') or {}).get('num_queries', 0)
    return dict(
        caption=bool(opts.get('caption', False)),
        num_queries=int(k) if opts.get('metaquery') else 0,
        queries_see_caption=bool(opts.get('queries_see_caption', False)))


def _inject_plan_options(dataset, uno: dict, where: str) -> None:
    """Give every dataset that takes ``uno=`` the derived options.

    A dataset that sets ``uno`` explicitly keeps it, but its metaquery
    count must match the model's.
    """
    if not isinstance(dataset, dict):
        return
    children = dataset.get('datasets') or []
    if isinstance(children, dict):  # MixtureDataset: keyed by name
        children = list(children.values())
    for child in [dataset.get('dataset')] + list(children):
        _inject_plan_options(child, uno, where)
    cls = DATASETS.get(dataset.get('type')) if isinstance(
        dataset.get('type'), str) else dataset.get('type')
    if cls is None or 'uno' not in inspect.signature(cls).parameters:
        return
    if dataset.get('uno') is None:
        dataset['uno'] = dict(uno)
    elif uno['num_queries'] and dataset['uno'].get(
            'num_queries', 0) != uno['num_queries']:
        raise UnoConfigError(
            f"{where}.dataset.uno.num_queries="
            f"{dataset['uno'].get('num_queries', 0)} differs from "
            f"model.metaquery.num_queries={uno['num_queries']}; leave "
            'dataset.uno out to derive it from the model')


def _check_benchmark(benchmark: dict) -> None:
    """``benchmark = dict(sampler=..., captioner=...)``: known keys only."""
    from uno.models.sampling import Captioner, FlowSampler
    from uno.utils.errors import did_you_mean
    parts = dict(sampler=FlowSampler, captioner=Captioner)
    for key, value in benchmark.items():
        if key not in parts:
            raise UnoConfigError(f"unknown key 'benchmark.{key}': "
                                 f'{did_you_mean(key, parts)}')
        names = list(inspect.signature(parts[key]).parameters)
        for arg in value or {}:
            if arg not in names:
                raise UnoConfigError(
                    f"unknown argument 'benchmark.{key}.{arg}' of "
                    f'{parts[key].__name__}: {did_you_mean(arg, names)}')
