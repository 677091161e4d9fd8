# One metaquery per understanding-encoder token (32 px / patch 4 = 64), no
# pooling: the literal "metaqueries predict the understanding tokens".
# (No metaqueries at all is objective_weights/..._reg0.0.py.)
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
model = dict(metaquery=dict(num_queries=64))
objectives = dict(regression=dict(resample='none'))
