# No metaqueries: the regression objective must go too (weight 0).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
model = dict(metaquery=dict(num_queries=0))
objectives = dict(regression=dict(weight=0.0))
