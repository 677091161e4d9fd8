# 64 metaqueries (baseline 16).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
model = dict(metaquery=dict(num_queries=64))
