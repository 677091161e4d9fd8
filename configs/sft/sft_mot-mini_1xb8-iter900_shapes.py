# Flow-only SFT given at least the main UNO config's wall-clock: a UNO
# step of the mini model costs 1.16-1.25x an SFT step on the CPU (stage
# 2c, measured: docs/results section 2; 1.5x on earlier bases), so SFT's
# 900 iterations for UNO's 600 are 1.2-1.3x UNO's time. The learning rate
# is constant after warm-up, so this run's iter_600.pth is the
# equal-steps baseline as well.
_base_ = './sft_mot-mini_1xb8-iter600_shapes.py'
train_cfg = dict(max_iters=900)
