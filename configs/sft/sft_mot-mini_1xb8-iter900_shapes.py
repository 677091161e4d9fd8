# Flow-only SFT at equal wall-clock with the main UNO config: a UNO step
# of the mini model costs about 1.5x an SFT step on the CPU (measured, see
# README "Results"), so SFT gets 900 iterations for UNO's 600. The
# learning rate is constant after warm-up, so this run's iter_600.pth is
# the equal-steps baseline as well.
_base_ = './sft_mot-mini_1xb8-iter600_shapes.py'
train_cfg = dict(max_iters=900)
