"""GradientFlowHook: per-layer gradient norms and flow cosines on the gen
expert, logged without changing training."""
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, UNO_OBJECTIVES, t2i_sample
from uno.structures.packing import pack_sequences
from uno.engine import UnoTrainer, build_runner
from uno.engine.hooks import GradientFlowHook
from uno.evaluation.gradient_flow import gradient_flow

UNO = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'


def _trainer(model_cfg, objectives):
    torch.manual_seed(0)
    trainer = UnoTrainer(model=model_cfg, objectives=objectives)
    # a trained model has a non-zero velocity head (zero-init otherwise
    # leaves the flow gradient on the decoder at zero)
    torch.nn.init.normal_(trainer.model.llm2vae.weight, std=0.1)
    return trainer


def _uno_batch(n=2):
    return pack_sequences([t2i_sample(seed=i, caption_len=3, num_queries=4)
                           for i in range(n)], latent_stride=4)


def test_keys_ranges_and_no_side_effects(uno_model_cfg):
    trainer = _trainer(uno_model_cfg, UNO_OBJECTIVES)
    rng = torch.get_rng_state()
    logs = GradientFlowHook(interval=1).measure(trainer, _uno_batch(), 7)
    layers = len(trainer.model.decoder.layers)
    expected = {f'gradflow/{n}/norm/layer{i}'
                for n in ('flow', 'caption', 'regression')
                for i in range(1, layers + 1)}
    expected |= {f'gradflow/cos_flow_{n}/layer{i}'
                 for n in ('caption', 'regression')
                 for i in range(1, layers + 1)}
    assert set(logs) == expected
    assert all(v > 0 for k, v in logs.items() if '/norm/' in k)
    assert all(-1 <= v <= 1 for k, v in logs.items() if '/cos_flow_' in k)
    # nothing accumulated into .grad, the global RNG untouched
    assert all(p.grad is None for p in trainer.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    # fixed noise: the same iteration measures the same numbers
    again = GradientFlowHook(interval=1).measure(trainer, _uno_batch(), 7)
    assert again == logs


def test_cosine_with_itself_is_one_and_norm_scales_with_weight(
        tiny_model_cfg):
    objectives = dict(
        flow=dict(type='FlowMatchingObjective', weight=1.0),
        flow2=dict(type='FlowMatchingObjective', weight=2.0))
    trainer = _trainer(tiny_model_cfg, objectives)
    batch = pack_sequences([t2i_sample(seed=i) for i in range(2)],
                           latent_stride=4)
    gen = torch.Generator().manual_seed(0)
    logs = gradient_flow(trainer, batch, layers=[2], generator=gen)
    assert set(logs) == {'gradflow/flow/norm/layer2',
                         'gradflow/flow2/norm/layer2',
                         'gradflow/cos_flow_flow2/layer2'}
    assert logs['gradflow/cos_flow_flow2/layer2'] == pytest.approx(1.0)
    assert logs['gradflow/flow2/norm/layer2'] == pytest.approx(
        2 * logs['gradflow/flow/norm/layer2'], rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        GradientFlowHook(interval=0)
    with pytest.raises(ValueError):
        GradientFlowHook(layers='last')


def _run(tmp_path, name, hook):
    cfg = Config.fromfile(osp.join(REPO, UNO))
    cfg.work_dir = str(tmp_path / name)
    cfg.merge_from_dict({
        'train_cfg.max_iters': 4,
        'train_dataloader.batch_size': 4,
        'default_hooks.checkpoint.interval': 1000,
        'default_hooks.checkpoint.save_last': False,
        'default_hooks.logger.interval': 2,
        'visualizer.vis_backends': [dict(type='LocalVisBackend')]})
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    if hook:
        cfg.custom_hooks = list(cfg.custom_hooks) + [
            dict(type='GradientFlowHook', interval=2)]
    runner = build_runner(cfg)
    runner.train()
    state = {k: v.detach().clone()
             for k, v in runner.model.state_dict().items()}
    rows = []
    for root, _, files in os.walk(cfg.work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                rows += [json.loads(line) for line in f]
    return state, rows


def test_training_is_bit_identical_with_the_hook(tmp_path):
    plain, _ = _run(tmp_path, 'plain', hook=False)
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.visualization import Visualizer
    for cls in (MMLogger, Visualizer, MessageHub):  # a second Runner
        cls._instance_dict.clear()
    hooked, rows = _run(tmp_path, 'hooked', hook=True)
    assert plain.keys() == hooked.keys()
    assert all(torch.equal(plain[k], hooked[k]) for k in plain)
    flow_rows = [r for r in rows if any(k.startswith('gradflow/')
                                        for k in r)]
    assert [r['step'] for r in flow_rows] == [2, 4]
    for i in (1, 2):  # the tiny model's two layers
        assert flow_rows[-1][f'gradflow/caption/norm/layer{i}'] > 0
        assert -1 <= flow_rows[-1][f'gradflow/cos_flow_regression/layer{i}'] \
            <= 1


def test_hook_layers_and_seed(uno_model_cfg):
    """The hook's layers pick the logged layers; its seed picks the
    measurement noise (same seed, same numbers; another seed, others)."""
    trainer = _trainer(uno_model_cfg, UNO_OBJECTIVES)
    logs = GradientFlowHook(interval=1, layers=[1]).measure(
        trainer, _uno_batch(), 7)
    assert logs and all(k.endswith('/layer1') for k in logs)
    same = GradientFlowHook(interval=1, layers=[1]).measure(
        trainer, _uno_batch(), 7)
    other = GradientFlowHook(interval=1, layers=[1], seed=5).measure(
        trainer, _uno_batch(), 7)
    assert same == logs and other != logs


def test_hook_skips_under_fsdp():
    """A sharded forward needs every rank: under UnoFSDP (or a subclass a
    project registers) the hook measures nothing (it would fail on this
    batch) and warns once."""
    from types import SimpleNamespace

    from uno.engine.fsdp import UnoFSDP

    class ProjectFSDP(UnoFSDP):
        pass

    runner = SimpleNamespace(iter=0, model=ProjectFSDP.__new__(ProjectFSDP))
    hook = GradientFlowHook(interval=1)
    hook.after_train_iter(runner, 0, data_batch=object())
    assert hook._warned
