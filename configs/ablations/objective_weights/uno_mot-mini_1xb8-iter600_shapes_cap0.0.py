# Captioning weight 0.0 (baseline 0.5): metaquery regression only.
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(caption=dict(weight=0.0))
