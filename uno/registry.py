"""Every registry of uno, in one place (scope ``'uno'``).

Registries that mmengine's Runner builds from (models, datasets, hooks, ...)
are children of the mmengine roots so that ``default_scope='uno'`` finds
uno's classes there; registries only uno reads (objectives, encoders,
attention backends, evaluators) are roots of their own. Each one states
the package where its classes live, so a lookup imports that package on
demand and nothing relies on import side effects or scope inference.

An unknown ``type`` fails with the registry's name and the closest
registered names (see :func:`build_with_suggestions`).
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry, build_from_cfg

from uno.errors import UnoConfigError


def build_with_suggestions(cfg, registry, default_args=None):
    """Build ``cfg`` from ``registry``; an unknown type names close matches.

    mmengine's own error for an unknown type says only that the name is
    missing. This one says which registry was searched and which
    registered names are closest, in one line.
    """
    from uno.utils.config_check import check_keys  # it imports this module
    obj_type = cfg.get('type') if hasattr(cfg, 'get') else None
    if isinstance(obj_type, str) and registry.get(obj_type) is None:
        check_keys([obj_type], registry_names(registry), 'type',
                   f" in registry '{registry.scope}.{registry.name}'")
    return build_from_cfg(cfg, registry, default_args)


def registry_names(registry: Registry) -> list:
    """Names registered in ``registry`` (after importing its locations)."""
    registry.import_from_location()
    return sorted(registry.module_dict)


def _child(name, parent, location):
    return Registry(
        name,
        parent=parent,
        scope='uno',
        locations=location if isinstance(location, list) else [location],
        build_func=build_with_suggestions)


def _root(name, location):
    return Registry(
        name,
        scope='uno',
        locations=[location],
        build_func=build_with_suggestions)


# --- selected by the Runner (children of the mmengine roots) ---------------
# top models: the trainable unit the Runner drives (UnoTrainer)
MODELS = _child('model', MMENGINE_MODELS, ['uno.models', 'uno.engine'])
# model wrappers (DDP with the non-finite guard)
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS, 'uno.engine')
# datasets: ShapesWorld, file-backed image-caption / edit sets
DATASETS = _child('dataset', MMENGINE_DATASETS, 'uno.datasets')
# per-sample transforms of the data pipelines
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'uno.datasets')
# samplers of the dataloaders
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'uno.datasets')
# collate functions (the sequence packer)
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, 'uno.datasets')
# training hooks (sampling grids, NaN guard, throughput)
HOOKS = _child('hook', MMENGINE_HOOKS, 'uno.engine')
# train / val / test loops
LOOPS = _child('loop', MMENGINE_LOOPS, 'uno.engine')
# optimizer wrappers (CPU autocast wrapper)
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS, 'uno.engine')
# optimizer constructors (trainable parameters only, expert param groups)
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                    'uno.engine')
# optimizers, learning-rate schedules and the visualizer: mmengine's own
# (AdamW, CosineAnnealingLR, Visualizer, ...), found through the parent;
# the children only let the 'uno' scope resolve without a warning
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'uno.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS,
                          'uno.engine')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'uno.engine')
# experiment tracking back-ends (MLflow)
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'uno.tracking')
# benchmark evaluators run by tools/test.py (mmengine metrics)
EVALUATORS = _child('metric', MMENGINE_METRICS, 'uno.evaluation')

# --- uno's own (read by uno code only) -------------------------------------
# training objectives (flow matching, captioning, visual regression, ...)
OBJECTIVES = _root('objective', 'uno.objectives')
# understanding encoders (ViT) and latent encoders (VAE, patchifier)
ENCODERS = _root('encoder', 'uno.models.encoders')
# attention backends over packed sequences (sdpa, flex, xformers)
ATTENTION = _root('attention', 'uno.models.attention')
# tokenizers for text segments
TOKENIZERS = _root('tokenizer', 'uno.datasets')

__all__ = [
    'MODELS', 'MODEL_WRAPPERS', 'DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS',
    'FUNCTIONS', 'HOOKS', 'LOOPS', 'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIMIZERS', 'PARAM_SCHEDULERS',
    'VISUALIZERS', 'VISBACKENDS', 'EVALUATORS', 'OBJECTIVES',
    'ENCODERS', 'ATTENTION', 'TOKENIZERS', 'build_with_suggestions',
    'registry_names', 'UnoConfigError'
]
