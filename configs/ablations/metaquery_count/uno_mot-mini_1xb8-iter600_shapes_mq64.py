# 64 metaqueries (baseline 16), targets pooled to 64 tokens. On the mini
# model the understanding encoder has 64 tokens (32 px / patch 4), so the
# pooling is the identity and this run equals ..._mq64-nopool.py; the two
# differ only where the encoder has more tokens than metaqueries.
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
model = dict(metaquery=dict(num_queries=64))
