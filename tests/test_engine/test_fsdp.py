"""FSDP2 on CPU (gloo): 2 sharded processes x B train like 1 x 2B.

The FSDP config is a delta of the UNO baseline. Two processes shard every
decoder layer (frozen und + trainable gen expert in one unit), the ViT
blocks and the connector; the losses, gradient norm and weights match a
plain one-process run with the double batch, frozen weights do not move,
checkpoints are sharded folders, and ``--resume`` continues from one.
"""
import json
import os
import os.path as osp
import subprocess

import pytest
import torch
from mmengine.config import Config

from tests.conftest import BASELINE, BASELINE_ITERS, REPO, mlflow_store
from tests.tools import free_port
from uno.engine.sharded_checkpoint import (is_sharded_checkpoint,
                                           load_sharded_meta, read_sharded,
                                           sharded_tensors)
from uno.registry import MODELS
from uno.utils.config_diff import config_diff

CONFIG = 'configs/uno/uno_mot-tiny_2xb4-fsdp-iter200_shapes.py'
ITERS = 3
FROZEN = ('model.decoder.layers.0.experts.und.', 'model.embed_tokens.',
          'model.lm_head.', 'model.connector.', 'model.und_encoder.',
          'model.decoder.norm.und.')
TRAINED = ('model.decoder.layers.0.experts.gen.', 'model.llm2vae.',
           'model.metaquery.', 'objectives.')


def test_wrap_units_are_layers_encoder_blocks_connector_head():
    cfg = Config.fromfile(osp.join(REPO, BASELINE))
    model = MODELS.build(cfg.model)
    units = model.fsdp_wrap_modules()
    ids = {id(u) for u in units}
    assert all(id(layer) in ids for layer in model.decoder.layers)
    assert id(model.connector) in ids and id(model.lm_head) in ids
    blocks = list(model.und_encoder.model.blocks)
    assert blocks and all(id(b) in ids for b in blocks)
    assert id(model.embed_tokens) not in ids  # read outside its forward
    # one unit mixes frozen (und) and trainable (gen) parameters
    flags = {p.requires_grad for p in model.decoder.layers[0].parameters()}
    assert flags == {True, False}
    cfg.model.llm.tie_word_embeddings = True
    tied = MODELS.build(cfg.model)
    # a tied lm_head stays with the embeddings, in the root unit
    assert all(u is not tied.lm_head for u in tied.fsdp_wrap_modules())


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU')
def test_cpu_offload_without_a_gpu_is_one_line():
    from uno.engine.fsdp import UnoFSDP
    from uno.errors import UnoConfigError
    # refused before any process group or mesh is needed (FSDP2 itself
    # fails deep inside: 'Found no NVIDIA driver')
    with pytest.raises(UnoConfigError, match='cpu_offload=True needs a GPU'):
        UnoFSDP(torch.nn.Linear(2, 2), cpu_offload=True)


def test_fsdp_config_is_a_short_delta_of_the_baseline():
    diff = config_diff(Config.fromfile(osp.join(REPO, BASELINE)),
                       Config.fromfile(osp.join(REPO, CONFIG)))
    keys = {k for k, _, _ in diff}
    assert keys and all(k.startswith('model_wrapper_cfg')
                        or k == 'train_dataloader.batch_size' for k in keys)
    assert len(open(osp.join(REPO, CONFIG)).read().splitlines()) <= 15


def _options(batch, iters=ITERS):
    return [
        '--cfg-options', f'train_cfg.max_iters={iters}',
        'train_cfg.val_interval=1000', 'default_hooks.logger.interval=1',
        'log_processor.window_size=1', f'train_dataloader.batch_size={batch}',
        'default_hooks.checkpoint.interval=2'
    ]


def _losses(work_dir):
    """Logged training rows by step, over every run in ``work_dir``."""
    rows = {}
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                for line in f:
                    row = json.loads(line)
                    if 'loss' in row:
                        rows[row['step']] = row
    assert rows, f'no scalars.json under {work_dir}'
    return rows


def _weights(path):
    return read_sharded(str(path), sharded_tensors(str(path)))


@pytest.mark.dist
@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume(tmp_path, baseline_run):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               MLFLOW_TRACKING_URI=mlflow_store(tmp_path / 'mlflow.db'))
    # the reference: the session's one-process batch-4 baseline run
    one, two = baseline_run, tmp_path / 'work_dirs/two'
    assert BASELINE_ITERS > ITERS

    def dist(*extra, iters=ITERS, cfg=()):
        res = subprocess.run(
            ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir',
             str(two), *extra, *_options(2, iters), *cfg], cwd=REPO,
            env=dict(env, PORT=str(free_port())), capture_output=True,
            text=True, timeout=600)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        return res

    dist()
    # sharded checkpoints: one file per rank, meta by rank 0
    ckpt = two / f'iter_{ITERS}.pth'
    assert is_sharded_checkpoint(ckpt)
    assert {'__0_0.distcp', '__1_0.distcp', 'meta.pth'} <= set(
        os.listdir(ckpt))
    assert load_sharded_meta(str(ckpt))['meta']['iter'] == ITERS

    # the same run: losses (all UNO objectives), grad norm and weights
    a = _losses(one)
    b = _losses(two)
    assert sorted(b) == list(range(1, ITERS + 1))
    for step in b:
        for key in ('loss', 'loss/flow', 'loss/caption', 'loss/regression',
                    'tokens/flow', 'tokens/caption', 'grad_norm'):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-4), \
                (step, key)
    wa = torch.load(one / f'iter_{ITERS + 1}.pth',
                    weights_only=False)['state_dict']
    w2, w3 = _weights(two / 'iter_2.pth'), _weights(ckpt)
    assert set(w3) == set(wa)

    # frozen weights stay put (and equal the plain run's), trained move
    for key, value in w3.items():
        if key.startswith(FROZEN):
            assert torch.equal(value, w2[key]), key
            assert torch.equal(value, wa[key]), key
    moved = [k for k in w3 if k.startswith(TRAINED)]
    assert moved and all(not torch.equal(w3[k], w2[k]) for k in moved)

    # --resume continues from the latest sharded checkpoint, here as HSDP
    # (shard_size=1: each rank a whole replica), which reshards on load
    res = dist('--resume', iters=ITERS + 1,
               cfg=['model_wrapper_cfg.shard_size=1'])
    assert 'resumed epoch: 0, iter: 3' in res.stdout + res.stderr
    assert "mesh {'replicate': 2, 'shard': 1}" in res.stdout + res.stderr
    b = _losses(two)
    assert a[ITERS + 1]['loss'] == pytest.approx(b[ITERS + 1]['loss'],
                                                 rel=1e-4)
    w4 = _weights(two / f'iter_{ITERS + 1}.pth')
    for key, value in wa.items():
        torch.testing.assert_close(value, w4[key], rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.dist
def test_fsdp_bf16_two_iterations_on_cuda(tmp_path):
    """Where CUDA is present: 2 FSDP iterations with bf16 parameters and
    fp32 reductions (NCCL), one process per visible GPU (at most 2)."""
    gpus = min(2, torch.cuda.device_count())
    # the JSON visualizer only: this is about NCCL, FSDP2 and bf16, and a
    # GPU image may lack MLflow (the CPU FSDP test covers MLflow)
    config = tmp_path / 'fsdp_local_vis.py'
    config.write_text(f"_base_ = [{osp.join(REPO, CONFIG)!r}]\n"
                      "visualizer = dict(vis_backends=[dict(type="
                      "'LocalVisBackend')])\n")
    env = dict(os.environ)
    work = tmp_path / 'work_dirs/gpu'
    res = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), str(gpus), '--work-dir',
         str(work), *_options(2, 2),
         "model_wrapper_cfg.param_dtype='bfloat16'",
         "model_wrapper_cfg.reduce_dtype='float32'"],
        cwd=REPO, env=dict(env, PORT=str(free_port())), capture_output=True,
        text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    rows = _losses(work)
    assert sorted(rows) == [1, 2]
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in rows.values())
    assert is_sharded_checkpoint(str(work / 'iter_2.pth'))
