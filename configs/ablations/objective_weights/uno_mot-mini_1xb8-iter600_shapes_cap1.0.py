# Captioning weight 1.0 (baseline 0.5).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(caption=dict(weight=1.0))
