# Regression weight 0.0 (baseline 0.5): captioning only, no metaqueries.
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(regression=dict(weight=0.0))
