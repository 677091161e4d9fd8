# Flow-only SFT: same model, data, steps, batch and learning rate as
# configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py; only `objectives` differ.
_base_ = [
    '../_base_/models/mot_tiny_vit.py',
    '../_base_/datasets/shapesworld_t2i.py',
    '../_base_/objectives/flow.py',
    '../_base_/schedules/iter_200_adamw.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
