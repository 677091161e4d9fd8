"""UnoCheckpointHook options, in process: what a saved file holds and what
it is called (the killed-save and resume behaviour: test_resume.py)."""
import logging
import os
from types import SimpleNamespace

import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from uno.engine.checkpoint import load_checkpoint_file
from uno.engine.hooks.checkpoint_hook import UnoCheckpointHook


def _runner(work_dir, hub_name):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # state to save
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    return SimpleNamespace(
        work_dir=str(work_dir), model=model,
        optim_wrapper=OptimWrapper(optimizer),
        param_schedulers=[scheduler],
        message_hub=MessageHub.get_instance(hub_name),
        cfg=SimpleNamespace(pretty_text=''), seed=0, experiment_name='x',
        train_dataloader=None, epoch=0, iter=0, max_iters=4,
        logger=logging.getLogger('test_checkpoint_hook'),
        call_hook=lambda *a, **kw: None)


def _train(hook, runner):
    hook.before_train(runner)
    for it in range(runner.max_iters):
        runner.iter = it
        hook.after_train_iter(runner, it)


def test_optimizer_scheduler_and_filename_options(tmp_path):
    full = tmp_path / 'full'
    full.mkdir()
    runner = _runner(full, 'ckpt_hook_full')
    _train(UnoCheckpointHook(interval=2), runner)
    assert sorted(os.listdir(full)) == ['iter_2.pth', 'iter_4.pth',
                                        'last_checkpoint']
    ckpt = load_checkpoint_file(str(full / 'iter_4.pth'))
    assert 'optimizer' in ckpt and 'param_schedulers' in ckpt

    lean = tmp_path / 'lean'
    lean.mkdir()
    runner = _runner(lean, 'ckpt_hook_lean')
    _train(UnoCheckpointHook(interval=2, max_keep_ckpts=1,
                             save_optimizer=False,
                             save_param_scheduler=False,
                             filename_tmpl='step{:04d}.pth'), runner)
    # the template names the files, and rotation removes by it too
    assert sorted(os.listdir(lean)) == ['last_checkpoint', 'step0004.pth']
    assert (lean / 'last_checkpoint').read_text().endswith('step0004.pth')
    ckpt = load_checkpoint_file(str(lean / 'step0004.pth'))
    assert 'optimizer' not in ckpt and 'param_schedulers' not in ckpt
    assert set(ckpt['state_dict']) == {'weight', 'bias'}
