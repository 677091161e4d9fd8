"""uno/engine/weights.py: weight files read inert, one check of weights
against a model (missing, unexpected, resized, integer-for-float, NaN)."""
import pytest
import torch
from torch import nn

from uno.engine.checkpoint import CheckpointError
from uno.engine.weights import (load_model_weights, read_model_weights,
                                state_dict_mismatch)


def test_mismatch_names_keys_and_shapes():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    sd = model.state_dict()
    sd['0.weight'] = torch.zeros(4, 2)
    sd['extra'] = torch.zeros(1)
    del sd['1.bias']
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, sd)
    msg = str(err.value)
    assert '1.bias' in msg and 'extra' in msg and '(4, 2)' in msg
    sd['1.weight'] = torch.ones(1, 3, dtype=torch.long)  # not a cast
    before = model[1].weight.detach().clone()
    report = load_model_weights(model, sd, strict=False)
    assert report['missing'] == ['1.bias']
    assert report['dtype'] == ['1.weight: checkpoint torch.int64 vs model '
                               'torch.float32']
    assert torch.equal(model[1].weight, before)  # left as built
    assert torch.equal(model[0].bias, sd['0.bias'])


@pytest.mark.parametrize('make, match', [
    (lambda p, data: p.write_bytes(data[:len(data) // 2]), 'damaged'),
    (lambda p, data: torch.save({}, p), 'not a safetensors file'),
    (None, 'does not exist'),
])
def test_unreadable_safetensors_give_one_line(tmp_path, make, match):
    from safetensors.torch import save as save_bytes
    path = tmp_path / 'w.safetensors'
    if make is not None:
        make(path, save_bytes(dict(w=torch.randn(100))))
    with pytest.raises(CheckpointError, match=match) as err:
        read_model_weights(str(path))
    assert '\n' not in str(err.value)


def test_integer_or_nonfinite_weights_do_not_load():
    model = nn.Linear(2, 2)
    bad = dict(weight=torch.zeros(2, 2, dtype=torch.long),
               bias=torch.tensor([0.0, float('nan')]))
    report = state_dict_mismatch(model, bad)
    assert report['dtype'] == [
        'weight: checkpoint torch.int64 vs model torch.float32']
    assert report['nonfinite'] == ['bias']
    with pytest.raises(CheckpointError,
                       match='dtype: weight.*nonfinite: bias'):
        load_model_weights(model, bad)
    # strict=False loads what matches: neither of them
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_model_weights(model, bad, strict=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
