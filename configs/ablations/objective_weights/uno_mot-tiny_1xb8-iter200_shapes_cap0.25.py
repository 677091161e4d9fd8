# Captioning weight 0.25 (baseline 0.5).
_base_ = '../../uno/uno_mot-tiny_1xb8-iter200_shapes.py'
objectives = dict(caption=dict(weight=0.25))
