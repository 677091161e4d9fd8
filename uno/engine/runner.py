"""Build mmengine's Runner from a uno config (validated, model and
objectives joined into the :class:`UnoTrainer`), and uno's Runner.

The Runner keeps the original config; its checkpoint reading:
``docs/checkpoints.md``.
"""
import copy
import inspect
import os.path as osp
import re

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from uno.datasets.builder import inject_plan_options
from uno.registry import FUNCTIONS, MODEL_WRAPPERS
from uno.errors import UnoConfigError
from uno.utils.paths import check_writable
from .checkpoint import (LAST_CHECKPOINT, CheckpointError,
                         checkpoint_candidates, load_checkpoint_file,
                         read_last_checkpoint)
from .ddp import DIST_TIMEOUT_S, init_cpu_process_group
from .fsdp import UnoFSDP
from .sharded_checkpoint import (is_sharded_checkpoint, load_sharded,
                                 load_sharded_meta, sharded_tensors)
from .weights import check_weights, load_safetensors, mismatch_text

DEFAULT_CONSTRUCTOR = 'TrainableOnlyOptimWrapperConstructor'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def build_runner(cfg: Config) -> Runner:
    """Validate ``cfg`` and build the Runner.

    Raises:
        UnoConfigError: on an unknown key, type or argument.
    """
    from uno.utils.config_check import validate_config
    validate_config(cfg)
    _check_benchmark(cfg.get('benchmark') or {})
    load_from = cfg.get('load_from')  # a local one must exist
    if load_from and '://' not in str(load_from) and not osp.exists(
            osp.expanduser(str(load_from))):
        raise UnoConfigError(f'load_from={load_from}: no such checkpoint '
                             'file or folder')
    cfg = copy.deepcopy(cfg)
    uno = plan_options(cfg)
    for key in LOADERS:
        if cfg.get(key):
            inject_plan_options(cfg[key].get('dataset'), uno, key)
    trainer = dict(
        type='UnoTrainer',
        model=cfg.model,
        objectives=cfg.objectives,
        seed=cfg.get('randomness', {}).get('seed') or 0,
        tokenizer=cfg.get('tokenizer'),
        **(cfg.get('benchmark') or {}))
    optim_wrapper = copy.deepcopy(cfg.get('optim_wrapper'))
    if optim_wrapper is not None:
        if optim_wrapper.get('type') == 'AmpOptimWrapper' and \
                not torch.cuda.is_available():
            raise UnoConfigError(
                "optim_wrapper.type = 'AmpOptimWrapper' needs a GPU and "
                "none is visible: use 'OptimWrapper' on the CPU")
        optim_wrapper.setdefault('constructor', DEFAULT_CONSTRUCTOR)
    env_cfg = copy.deepcopy(cfg.get('env_cfg', {}))
    env_cfg.setdefault('dist_cfg', {}).setdefault(
        'backend', 'nccl' if torch.cuda.is_available() else 'gloo')
    env_cfg['dist_cfg'].setdefault('timeout', DIST_TIMEOUT_S)
    check_writable(cfg.work_dir)
    resume, note = cfg.get('resume'), None
    if resume and load_from is None:
        tmpl = ((cfg.get('default_hooks') or {}).get('checkpoint')
                or {}).get('filename_tmpl')
        load_from, note = _resume_target(osp.abspath(cfg.work_dir), tmpl)
        resume = load_from is not None
    if cfg.get('launcher', 'none') == 'pytorch':
        init_cpu_process_group(env_cfg['dist_cfg'])
    # accumulation runs an IterBasedTrainLoop as AccumulatingTrainLoop:
    # one iteration is one optimizer step over N batches
    train_cfg = cfg.get('train_cfg')
    counts = (optim_wrapper or {}).get('accumulative_counts', 1)
    kind = (train_cfg or {}).get('type')
    if kind == 'AccumulatingTrainLoop' or (
            counts > 1 and kind == 'IterBasedTrainLoop'):
        train_cfg = dict(train_cfg, type='AccumulatingTrainLoop',
                         accumulative_counts=counts)
    # every other Runner argument is the config's key of its name (or the
    # Runner's default); a top-level data_preprocessor is not passed on
    args = dict(
        model=trainer, train_cfg=train_cfg, optim_wrapper=optim_wrapper,
        load_from=load_from, resume=bool(resume), env_cfg=env_cfg,
        default_scope=cfg.get('default_scope', 'uno'), cfg=cfg,
        **{key: _resolve_collate(cfg.get(key)) for key in LOADERS})
    runner = UnoRunner(**{
        name: args[name] if name in args else cfg.get(
            name, copy.deepcopy(param.default))  # fresh: Runner updates
        for name, param in inspect.signature(Runner).parameters.items()
        if name != 'data_preprocessor'})
    if note:  # a skipped newer checkpoint, or nothing to resume from
        (runner.logger.warning if load_from else runner.logger.info)(note)
    return runner


def _resume_target(work_dir: str, filename_tmpl=None):
    """What ``resume=True`` without ``load_from`` resumes from: the newest
    of :func:`checkpoint_candidates` that reads as a training state.

    Returns:
        tuple: The checkpoint (None: train from scratch) and a line to log
        (the skipped checkpoints, or why from scratch) or None.

    Raises:
        CheckpointError: No checkpoint can be read, or ``last_checkpoint``
            names a missing one and there is no other.
    """
    candidates = checkpoint_candidates(work_dir, filename_tmpl)
    named = read_last_checkpoint(work_dir)
    if not candidates and named is not None:
        raise CheckpointError(
            f'--resume: {osp.join(work_dir, LAST_CHECKPOINT)} names '
            f'{named}, which does not exist, and {work_dir} holds no '
            'other checkpoint: put it back, or drop --resume to train '
            'from scratch')
    if not candidates:
        return None, (f'--resume: no checkpoint in {work_dir}, training '
                      'from scratch')
    failed = []
    for path in candidates:
        try:  # the meta only: a .pth is mapped, a folder's shards not read
            _require_meta(load_sharded_meta(path) if is_sharded_checkpoint(
                path) else load_checkpoint_file(path, mmap=True), path)
        except CheckpointError as e:
            failed.append((path, e))
            continue
        return path, (f'resumed from {path} instead of the newer '
                      + ', '.join(f'{p} ({e})' for p, e in failed)
                      if failed else None)
    raise CheckpointError(
        f'--resume: no checkpoint in {work_dir} can be read: '
        + '; '.join(str(e) for _, e in failed))


def _require_meta(checkpoint: dict, filename) -> None:
    """A checkpoint to resume from holds a training state (``meta``)."""
    if not isinstance(checkpoint.get('meta'), dict):
        raise CheckpointError(
            f'checkpoint {filename} holds weights only (no training '
            "state 'meta'): --resume needs a checkpoint the training "
            'saved; pass this one as load_from to start from it')


class UnoRunner(Runner):
    """mmengine's Runner with uno's model wrappers (DDP by default under a
    launcher; FSDP shards to the device, never the whole model) and inert,
    strict checkpoint reading: ``docs/checkpoints.md``."""

    def wrap_model(self, model_wrapper_cfg, model):
        from mmengine.dist import is_distributed
        if model_wrapper_cfg is None and is_distributed():
            model_wrapper_cfg = dict(type='UnoDistributedDataParallel')
        if model_wrapper_cfg is not None:
            model_wrapper_cfg = copy.deepcopy(model_wrapper_cfg)
            name = model_wrapper_cfg.get('type')  # config_check: 'uno.X'
            if isinstance(name, str) and name.removeprefix(
                    'uno.') in MODEL_WRAPPERS:
                name = name.removeprefix('uno.')
                # the scoped name makes mmengine's root lookup (and its
                # build) descend into uno's child registry
                model_wrapper_cfg['type'] = f'uno.{name}'
                if is_distributed() and issubclass(
                        MODEL_WRAPPERS.get(name), UnoFSDP):
                    # not model.to(device) first, as mmengine does: FSDP
                    # moves each rank's shard to the device, so the whole
                    # model never sits on one accelerator
                    model_wrapper_cfg['type'] = name
                    return MODEL_WRAPPERS.build(
                        model_wrapper_cfg, default_args=dict(module=model))
        return super().wrap_model(model_wrapper_cfg, model)

    def _init_model_weights(self) -> None:
        if not isinstance(self.model, UnoFSDP):
            return super()._init_model_weights()
        # mmengine then broadcasts every tensor from rank 0, which DTensor
        # shards do not support; UnoFSDP checked the ranks agree instead
        if hasattr(self.model.module, 'init_weights'):
            self.model.module.init_weights()

    def load_checkpoint(self, filename, map_location='cpu', strict=None,
                        revise_keys=[(r'^module\.', '')]):
        """Load weights (``load_from``), or a training state when the
        config sets ``resume`` (mmengine's ``resume`` then restores the
        loop, optimizer and schedulers from what this returns).

        Args:
            filename (str): A ``.pth`` file, a sharded checkpoint folder,
                or (``load_from``) an exported ``.safetensors`` file.
            strict (bool, optional): None follows the config's
                ``load_strict`` (default True).
            revise_keys (list): ``(pattern, replacement)`` renames of a
                file's keys.

        Raises:
            UnoConfigError: With ``strict``, when the weights do not match
                the model; when an FSDP run resumes from a ``.pth``.
            CheckpointError: The file cannot be read inertly, or a resume
                finds no training state in it.
        """
        from mmengine.model import is_model_wrapper
        resume = bool(self.cfg.get('resume', False))  # else load_from
        if strict is None:
            strict = bool(self.cfg.get('load_strict', True))
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        fsdp = isinstance(self.model, UnoFSDP)
        if fsdp:
            self.model.release()
        sharded = is_sharded_checkpoint(filename)
        if sharded:
            checkpoint = load_sharded_meta(filename)
        elif fsdp and resume:
            raise UnoConfigError(
                f'cannot resume this FSDP run from {filename}: resume needs '
                'a sharded checkpoint folder (pass the file as load_from '
                'to start from its weights)')
        elif str(filename).endswith('.safetensors'):
            checkpoint = dict(state_dict={  # see tools/misc/export_weights
                f'objectives.{k}' if k.startswith('objectives.') else
                f'model.{k}': v for k, v in load_safetensors(
                    str(filename)).items()})
        else:  # every FSDP rank reads the file: map it, do not copy it
            checkpoint = load_checkpoint_file(
                filename, 'cpu' if fsdp else map_location, mmap=fsdp)
        if resume:
            _require_meta(checkpoint, filename)
        _drop_code(checkpoint, filename, self.logger)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        if sharded:  # shapes only, checked before any shard is read
            state_dict = {k: torch.empty(s, dtype=d, device='meta')
                          for k, (s, d) in sharded_tensors(filename).items()}
        else:
            state_dict = checkpoint.get('state_dict', checkpoint)
            for pattern, repl in revise_keys:
                state_dict = {re.sub(pattern, repl, k): v
                              for k, v in state_dict.items()}
        what = 'resume' if resume else 'load_from'
        report, skipped = check_weights(
            model, state_dict, strict, () if resume else LOAD_FROM_OPTIONAL,
            f'{what}={filename}', 'set load_strict=False in the config to '
            'load only what matches')
        optional = report.pop('optional')
        if optional:
            self.logger.info(
                f'load_from: weights not in both model and checkpoint '
                f'(post-training modules, left as built): {optional}')
        if any(report.values()):
            self.logger.warning(f'{what}={filename} loaded where it matches '
                                'the model: ' + mismatch_text(report))
        kept = {k: v for k, v in state_dict.items() if k not in skipped}
        if sharded:
            optimizer = None
            if resume and sharded_tensors(filename, prefix='optimizer.'):
                self.optim_wrapper = self.build_optim_wrapper(
                    self.optim_wrapper)
                optimizer = self.optim_wrapper.optimizer
            load_sharded(filename, model, optimizer, list(kept))
            self.logger.info(f'Load sharded checkpoint from {filename}')
            return checkpoint  # no 'optimizer': its state is loaded already
        if fsdp:  # strict=False: what is skipped stays as built
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions, set_model_state_dict)
            set_model_state_dict(model, kept, options=StateDictOptions(
                full_state_dict=True, strict=False))
        else:
            model.load_state_dict(kept, strict=False)
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


# may be missing, unexpected or resized in load_from: what only
# post-training trains (a run may add, drop or resize it), and the latent
# stem, which starts at zero (adding it keeps the checkpoint's function)
LOAD_FROM_OPTIONAL = ('objectives.', 'model.metaquery.', 'model.latent_stem.')


def _drop_code(checkpoint: dict, filename, logger) -> None:
    """Remove ``meta['config']``: mmengine's ``Runner.resume`` executes it
    as Python (``Config.fromstring``). uno writes the config as text under
    ``meta['cfg']`` and never reads it back."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and 'config' in meta:
        meta.pop('config')
        logger.warning(f'{filename}: ignored meta.config (code that '
                       'resuming would have run); uno checkpoints have none')


def _resolve_collate(dataloader):
    """Replace a uno collate function name by the function itself (the
    Runner looks in mmengine's root FUNCTIONS registry only)."""
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


def _check_benchmark(benchmark: dict) -> None:
    """``benchmark = dict(sampler=..., captioner=...)``: known keys only."""
    from uno.models.sampling import Captioner, FlowSampler
    from uno.utils.config_check import check_keys
    parts = dict(sampler=FlowSampler, captioner=Captioner)
    check_keys(benchmark, parts, prefix='benchmark.')
    for key, value in benchmark.items():
        check_keys(value or {}, inspect.signature(parts[key]).parameters,
                   'argument', f' of {parts[key].__name__}',
                   f'benchmark.{key}.')
