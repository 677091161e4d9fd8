# Stage 2 of the mini model, generation beside understanding (as BAGEL is
# built): from the stage-1 checkpoint, the generation expert learns
# text-to-image and editing (flow matching) while captioning continues, half
# of it read from the *clean latents* of the generation expert, so the und
# expert learns to read generation tokens (what UNO later relies on). The
# understanding encoder and connector stay frozen (their stage-1 features);
# the und expert and text head keep training on both views. Latent tokens
# enter through the model's convolutional stem over their grid (next to the
# linear vae2llm), and TokenAttributeObjective gives the gen expert's
# hidden states the same dense per-token labels the ViT had in stage 1, on
# clean latents (the path the und expert reads) and on the noisy latents of
# text-to-image samples up to t = 0.6 (captioning alone teaches that path
# colour, not shape: docs/testbed.md).
_base_ = [
    '../_base_/models/mot_mini.py',
    '../_base_/datasets/shapesworld_mix.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
load_from = ('work_dirs/pretrain/und_mot-mini-cs_1xb16-iter3k_shapes-caption/'
             'iter_3000.pth')
model = dict(
    freeze=dict(und_encoder=True, connector=True, latent_encoder=True))
train_dataloader = dict(
    dataset=dict(
        weights=dict(t2i=0.45, caption=0.3, edit=0.25),
        datasets=dict(
            t2i=dict(token_labels=4),
            caption=dict(latent_fraction=0.5, token_labels=4))))
objectives = dict(
    flow=dict(type='FlowMatchingObjective', weight=1.0, shift=1.0),
    caption=dict(type='CaptioningObjective', weight=0.5,
                 noisy_captions=False),
    latent_attributes=dict(type='TokenAttributeObjective', weight=1.0,
                           view='latent', layer=2),
    noisy_attributes=dict(type='TokenAttributeObjective', weight=1.0,
                          view='noisy', layer=2, max_t=0.6))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95),
                   weight_decay=0.01),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=200),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=200, end=6000,
         eta_min=1e-4),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=6000, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=1000))
