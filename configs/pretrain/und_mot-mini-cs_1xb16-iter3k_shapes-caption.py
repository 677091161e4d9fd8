# Stage 1 of the mini model, understanding first (as BAGEL is built): the
# understanding encoder (a small ViT with a convolutional stem), the
# connector, the und expert and the text head learn to caption ShapesWorld
# images from the ViT view. TokenAttributeObjective stands in for the
# encoder's pretraining (BAGEL starts from a pretrained SigLIP): a linear
# head per attribute classifies every ViT token (shape, colour, size).
# Stage 2 (configs/pretrain/gen_*) adds generation beside it.
_base_ = [
    '../_base_/models/mot_mini.py',
    '../_base_/default_runtime.py',
]
tokenizer = dict(type='WordTokenizer', vocab_size=128)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pack_sequences', latent_stride=4, vit_stride=4),
    dataset=dict(
        type='ShapesWorldCaptionDataset',
        split='train',
        num_samples=1000000,
        token_labels=4,
        tokenizer=tokenizer))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pack_sequences', latent_stride=4, vit_stride=4),
    dataset=dict(
        type='ShapesWorldCaptionDataset',
        split='test',
        num_samples=128,
        token_labels=4,
        tokenizer=tokenizer))
val_evaluator = dict(type='ObjectiveLossMetric')
objectives = dict(
    caption=dict(type='CaptioningObjective', weight=1.0,
                 noisy_captions=False),
    attributes=dict(type='TokenAttributeObjective', weight=1.0))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95),
                   weight_decay=0.01),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=3000,
         eta_min=1e-4),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=3000, val_interval=1000)
val_cfg = dict(type='ValLoop')
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=500))
