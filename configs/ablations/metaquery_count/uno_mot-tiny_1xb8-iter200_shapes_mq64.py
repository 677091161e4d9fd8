# 64 metaqueries (baseline 16).
_base_ = '../../uno/uno_mot-tiny_1xb8-iter200_shapes.py'
model = dict(metaquery=dict(num_queries=64))
