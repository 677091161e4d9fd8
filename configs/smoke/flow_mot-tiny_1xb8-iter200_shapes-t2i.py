# CPU smoke run: a tiny MoT learns ShapesWorld text-to-image with flow
# matching from scratch (about a minute on 2 cores).
_base_ = [
    '../_base_/models/mot_tiny.py',
    '../_base_/datasets/shapesworld_t2i.py',
    '../_base_/objectives/flow.py',
    '../_base_/schedules/iter_200_adamw.py',
    '../_base_/benchmarks/shapesworld.py',
    '../_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(interval=50))
