# Flow-only SFT of the shipped pretrained mini model: same model, frozen
# set, data, steps, batch and learning rate as the main UNO config
# (configs/uno/uno_mot-mini_1xb8-iter600_shapes.py); only `objectives`
# differ.
_base_ = [
    '../_base_/models/mot_mini_pretrained.py',
    '../_base_/datasets/shapesworld_t2i_edit.py',
    '../_base_/objectives/flow.py',
    '../_base_/schedules/iter_600_adamw_const.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
# the shipped pretrained checkpoint (configs/pretrain/); checkpoints every
# 300 iterations, all kept (iter_300 is the equal-wall-clock point)
load_from = 'checkpoints/mot-mini_shapes-pretrain.safetensors'
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=300, max_keep_ckpts=-1))
