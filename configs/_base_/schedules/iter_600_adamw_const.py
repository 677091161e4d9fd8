# Post-training schedule of the mini model: AdamW, 20 warm-up iterations,
# then a constant learning rate, so the iteration-N checkpoint of a longer
# run equals an N-iteration run (the equal-wall-clock SFT baseline is the
# same run, evaluated later).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = dict(
    type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=20)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=600, val_interval=300)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
