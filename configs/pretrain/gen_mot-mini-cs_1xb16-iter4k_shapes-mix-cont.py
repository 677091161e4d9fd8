# Stage 2b of the mini model: the generation stage continued for 4,000
# iterations from stage 2's iter_6000.pth (its flow loss on the val split was
# still falling: 0.117 / 0.095 / 0.082 at 2k / 4k / 6k). Same data and
# objectives; the generation share is raised a little (t2i 0.5, caption
# 0.25) since understanding is saturated on both views; a fresh AdamW with
# a short warm-up and a lower peak learning rate.
_base_ = ['./gen_mot-mini-cs_1xb16-iter6k_shapes-mix.py']
load_from = ('work_dirs/pretrain/gen_mot-mini-cs_1xb16-iter6k_shapes-mix/'
             'iter_6000.pth')
train_dataloader = dict(
    dataset=dict(weights=dict(t2i=0.5, caption=0.25, edit=0.25)))
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=4000,
         eta_min=2e-5),
]
train_cfg = dict(max_iters=4000, val_interval=2000)
