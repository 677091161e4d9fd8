"""RecA: the plan, its attention, the frozen clean-image condition and a
two-iteration training run of the tiny config through tools/train.py."""
import collections
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from projects.reca.reca import ShapesWorldRecADataset, reca_plan
from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool
from uno.datasets import MixtureDataset, pack_sequences
from uno.engine import UnoTrainer
from uno.structures import SequencePlan
from uno.utils.config_check import validate_config

CONFIGS = osp.join(REPO, 'projects/reca/configs')
TINY = osp.join(CONFIGS, 'reca_mot-tiny_1xb8-iter200_shapes.py')
MINI = osp.join(CONFIGS, 'reca_mot-mini_1xb8-iter600_shapes.py')


def _reca_batch(n=2):
    ds = ShapesWorldRecADataset(num_samples=n)
    return pack_sequences([ds[i] for i in range(n)], latent_stride=4,
                          vit_stride=4)


def test_plan_is_vit_then_noisy_latents_of_the_same_image(tokenizer):
    segs = reca_plan(tokenizer)
    assert [s.kind for s in segs] == ['vit', 'noisy_latent']
    assert [s.image for s in segs] == [0, 0]
    assert [s.attn for s in segs] == ['full', 'noise']
    assert [s.loss for s in segs] == [False, True]
    assert all(s.sees is None for s in segs)  # the default visibility rule
    plan = ShapesWorldRecADataset(num_samples=4)[0]
    assert [s.kind for s in plan.segments] == ['vit', 'noisy_latent']
    assert len(plan.images) == 1
    assert not any(s.kind in ('text', 'caption') for s in plan.segments)


def test_mask_noisy_sees_vit_and_vit_never_sees_noisy():
    batch = _reca_batch(2)
    mask = batch.dense_mask()
    vit = torch.zeros(batch.num_tokens, dtype=torch.bool)
    vit[batch.vit_index] = True
    noisy = torch.zeros_like(vit)
    noisy[batch.noisy_index] = True
    assert batch.vit_index.numel() == 2 * 64  # 32 px, 4 px ViT patches
    assert batch.noisy_index.numel() == 2 * 64
    same = batch.sample_ids[:, None] == batch.sample_ids[None, :]
    # noisy latents see every ViT token of their own sample ...
    assert mask[noisy[:, None] & vit[None, :] & same].all()
    # ... and no token of the other sample
    assert not mask[~same].any()
    # the ViT tokens see each other fully (both directions) ...
    assert mask[vit[:, None] & vit[None, :] & same].all()
    # ... and never the noisy latents
    assert not mask[vit[:, None] & noisy[None, :]].any()
    # the noisy latents see themselves fully (BAGEL's noise segment)
    assert mask[noisy[:, None] & noisy[None, :] & same].all()
    # experts: ViT tokens on und, latents on gen
    assert set(batch.noisy_index.tolist()) <= set(batch.gen_index.tolist())
    assert not set(batch.vit_index.tolist()) & set(batch.gen_index.tolist())


def test_condition_is_the_clean_image_being_reconstructed():
    batch = _reca_batch(2)
    assert torch.equal(batch.vit_images, batch.noisy_images)
    ds = ShapesWorldRecADataset(num_samples=2)
    for i in range(2):
        assert torch.equal(batch.images[batch.vit_images[i]],
                           ds[i].images[0])


def test_deterministic_by_index_and_seed_and_dropout():
    ds = ShapesWorldRecADataset(num_samples=8)
    assert torch.equal(ds[3].images[0], ds[3].images[0])
    assert not torch.equal(ds[3].images[0], ds[4].images[0])
    other = ShapesWorldRecADataset(num_samples=8, seed=1)
    assert not torch.equal(ds[3].images[0], other[3].images[0])
    dropped = ShapesWorldRecADataset(num_samples=4, condition_dropout=1.0)
    plan = dropped[0]
    assert [s.kind for s in plan.segments] == ['text', 'noisy_latent']
    assert plan.segments[0].tokens == [dropped.tokenizer.bos_id,
                                       dropped.tokenizer.eos_id]
    assert torch.equal(plan.images[0], ds[0].images[0])
    with pytest.raises(ValueError, match='condition_dropout'):
        ShapesWorldRecADataset(condition_dropout=1.5)


def test_configs_validate_and_mix_t2i_with_reca():
    for path in (TINY, MINI):
        cfg = Config.fromfile(path)
        validate_config(cfg)
        assert set(cfg.objectives) == {'flow'}
        loader = cfg.train_dataloader
        assert loader.collate_fn.vit_stride == \
            cfg.model.und_encoder.config.patch_size
        assert dict(loader.dataset.weights) == dict(t2i=0.5, reca=0.5)
        mix = MixtureDataset(**{k: v for k, v in loader.dataset.items()
                                if k != 'type'})
        counts = collections.Counter(
            mix.source_of(i)[0] for i in range(400))
        assert abs(counts['reca'] / 400 - 0.5) < 0.1
        freeze = cfg.model['freeze']
        assert freeze.und_encoder and freeze.connector and freeze.und
    mini = Config.fromfile(MINI)
    sft = Config.fromfile(
        osp.join(REPO, 'configs/sft/sft_mot-mini_1xb8-iter600_shapes.py'))
    for key in ('model', 'objectives', 'optim_wrapper', 'param_scheduler',
                'train_cfg', 'load_from', 'val_dataloader'):
        assert mini.get(key) == sft.get(key), key
    assert (mini.train_dataloader.batch_size ==
            sft.train_dataloader.batch_size)


@pytest.mark.parametrize('path', [TINY, MINI])
def test_vit_path_frozen_and_flow_reaches_gen_expert(path):
    cfg = Config.fromfile(path)
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model, objectives=cfg.objectives)
    model = trainer.model
    # llm2vae starts at zero; give it weights so the flow loss has a
    # gradient below it
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)
    frozen = (list(model.und_encoder.parameters()) +
              list(model.connector.parameters()))
    assert frozen and not any(p.requires_grad for p in frozen)
    seen = []
    model.und_encoder.register_forward_hook(
        lambda mod, args, out: seen.append((args[0].clone(), out)))
    batch = _reca_batch(2)
    total, logs = trainer.compute_loss(batch)
    assert 'loss/flow' in logs and torch.isfinite(total)
    # the understanding encoder read the clean renders, without a graph
    (images, feats), = seen
    assert torch.equal(images, batch.images[batch.vit_images])
    assert not feats.requires_grad
    total.backward()
    assert all(p.grad is None for p in frozen)
    layer = model.decoder.layers[0]
    assert layer.experts['gen'].mlp.up_proj.weight.grad.abs().sum() > 0
    assert layer.experts['und'].mlp.up_proj.weight.grad is None


def test_velocity_depends_on_the_visual_condition():
    cfg = Config.fromfile(TINY)
    torch.manual_seed(0)
    trainer = UnoTrainer(model=cfg.model, objectives=cfg.objectives)
    model = trainer.model
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)
    ds = ShapesWorldRecADataset(num_samples=4)
    target, other = ds[0].images[0], ds[1].images[0]
    velocities = []
    for condition in (target, other):
        segs = reca_plan(ds.tokenizer)
        segs[0].image = 1  # condition on image 1, reconstruct image 0
        plan = SequencePlan(segs, images=[target, condition])
        batch = pack_sequences([plan], latent_stride=4, vit_stride=4)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            noisy = trainer.objectives.prepare(model, batch, gen).noisy
            velocities.append(model(batch, noisy).velocity)
    assert not torch.allclose(velocities[0], velocities[1])


def test_tiny_config_trains_two_iterations(tmp_path, monkeypatch, capsys):
    work_dir = tmp_path / 'work'
    monkeypatch.setenv('MLFLOW_TRACKING_URI',
                       mlflow_store(tmp_path / 'mlflow.db'))
    code, _, err = run_tool('train', [
        TINY, '--work-dir', str(work_dir), '--cfg-options',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=1000',
        'default_hooks.logger.interval=1'], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    rows = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                rows += [json.loads(line) for line in f]
    logged = [r for r in rows if 'loss/flow' in r]
    assert [r['step'] for r in logged] == [1, 2]
    assert all(0 < r['loss/flow'] < 10 for r in logged)
