# Pretrain the mini unified model from scratch on the ShapesWorld mixture:
# flow matching on generated images, captioning on the understanding
# samples (not on noisy images: that is UNO's job).
_base_ = [
    '../_base_/models/mot_mini.py',
    '../_base_/datasets/shapesworld_mix.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
objectives = dict(
    flow=dict(type='FlowMatchingObjective', weight=1.0, shift=1.0),
    caption=dict(type='CaptioningObjective', weight=0.25,
                 noisy_captions=False))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95),
                   weight_decay=0.01),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=200),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=200, end=4000,
         eta_min=1e-4),
]
# 4000 iterations of 16 samples: about 0.63 s/iter on an idle 2-core CPU
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=500))
