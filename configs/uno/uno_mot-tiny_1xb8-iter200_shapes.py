# UNO on the tiny MoT (random init, CPU scale): the baseline of the
# ablation folders. Differs from configs/sft/ only in `objectives`.
_base_ = [
    '../_base_/models/mot_tiny_vit.py',
    '../_base_/datasets/shapesworld_t2i.py',
    '../_base_/objectives/flow_cap_reg.py',
    '../_base_/schedules/iter_200_adamw.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
