"""Registries: one file, scope 'uno', clear errors on unknown types."""
import pytest

from uno import registry
from uno.registry import (ATTENTION, DATASETS, ENCODERS, FUNCTIONS, MODELS,
                          OBJECTIVES, TOKENIZERS, VISBACKENDS,
                          registry_names)
from uno.errors import UnoConfigError

ALL = [getattr(registry, n) for n in registry.__all__
       if n.isupper()]


@pytest.mark.parametrize('reg', ALL, ids=lambda r: r.name)
def test_scope_and_locations(reg):
    assert reg.scope == 'uno'
    assert all(loc.startswith('uno.') for loc in reg._locations)


def test_core_names_are_registered():
    assert 'UnoModel' in registry_names(MODELS)
    assert 'UnoTrainer' in registry_names(MODELS)
    assert 'FlowMatchingObjective' in registry_names(OBJECTIVES)
    assert 'ShapesWorldT2IDataset' in registry_names(DATASETS)
    assert 'pack_sequences' in registry_names(FUNCTIONS)
    assert 'WordTokenizer' in registry_names(TOKENIZERS)
    assert 'PixelPatchifier' in registry_names(ENCODERS)
    assert 'sdpa' in registry_names(ATTENTION)
    assert 'UnoMLflowVisBackend' in registry_names(VISBACKENDS)


def test_unknown_type_names_registry_and_close_matches():
    with pytest.raises(UnoConfigError) as err:
        OBJECTIVES.build(dict(type='FlowMatchingObjectiv'))
    msg = str(err.value)
    assert "'uno.objective'" in msg
    assert "did you mean 'FlowMatchingObjective'" in msg
    assert '\n' not in msg


def test_children_still_find_mmengine_names():
    assert VISBACKENDS.get('LocalVisBackend') is not None


def test_minimal_configs_build():
    obj = OBJECTIVES.build(dict(type='FlowMatchingObjective', weight=0.5))
    assert obj.weight == 0.5
    ds = DATASETS.build(dict(type='ShapesWorldT2IDataset', num_samples=2))
    assert len(ds) == 2 and ds[0].segments[-1].kind == 'noisy_latent'
