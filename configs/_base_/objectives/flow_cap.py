# Flow matching + captioning read from the noisy latents.
_base_ = ['./flow.py']
objectives = dict(caption=dict(type='CaptioningObjective', weight=0.5))
