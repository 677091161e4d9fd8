# The UNO baseline under FSDP2, 2 processes x 4 samples (the baseline's
# global batch of 8):
#   tools/dist_train.sh configs/uno/uno_mot-tiny_2xb4-fsdp-iter200_shapes.py 2
_base_ = [
    './uno_mot-tiny_1xb8-iter200_shapes.py',
    '../_base_/strategies/fsdp.py',
]
train_dataloader = dict(batch_size=4)
