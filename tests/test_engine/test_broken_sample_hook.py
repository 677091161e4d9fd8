"""BrokenSampleHook: running count, message hub, threshold, resume, summary."""
from types import SimpleNamespace

import pytest
from mmengine.logging import MessageHub

import uno.engine.hooks.broken_sample_hook as hook_module
from uno.engine.hooks.broken_sample_hook import BrokenSampleHook
from uno.registry import HOOKS


def _batch(broken, read):
    return SimpleNamespace(broken=broken, read=read)


def _runner(it=0):
    hub = MessageHub.get_instance('test_broken_sample_hook')
    return SimpleNamespace(message_hub=hub, iter=it)


def test_accumulates_and_logs(monkeypatch):
    logged = []
    monkeypatch.setattr(hook_module, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    hook, runner = BrokenSampleHook(), _runner()
    for i, (broken, read) in enumerate([(0, 4), (1, 4), (0, 4), (2, 5)]):
        hook.before_train_iter(runner, i, _batch(broken, read))
    hook.before_train_iter(runner, 4, dict(batch=_batch(1, 4)))
    hook.before_train_iter(runner, 5, None)  # a batch without counts
    assert (hook.broken, hook.read) == (4, 21)
    assert runner.message_hub.get_scalar('train/data/broken').current() == 4
    hook.after_train(runner)
    assert logged == ['BrokenSampleHook: skipped 4 broken samples of 21 '
                      'read (19.05%) during training']


def test_threshold():
    hook, runner = BrokenSampleHook(max_broken_fraction=0.2,
                                    min_samples=8), _runner()
    hook.before_train_iter(runner, 0, _batch(3, 4))  # too few to judge
    with pytest.raises(RuntimeError, match='max_broken_fraction=0.2'):
        hook.before_train_iter(runner, 1, _batch(1, 4))
    with pytest.raises(ValueError):
        BrokenSampleHook(max_broken_fraction=2)


def test_counts_survive_resume_not_load_from():
    hook = BrokenSampleHook()
    hook.before_train_iter(_runner(), 0, _batch(2, 8))
    checkpoint = {}
    hook.before_save_checkpoint(_runner(), checkpoint)

    resumed = BrokenSampleHook()
    resumed.after_load_checkpoint(_runner(), checkpoint)
    resumed.before_train(_runner(it=10))
    assert (resumed.broken, resumed.read) == (2, 8)

    fresh = BrokenSampleHook()  # load_from: a new run starts at iter 0
    fresh.after_load_checkpoint(_runner(), checkpoint)
    fresh.before_train(_runner(it=0))
    assert (fresh.broken, fresh.read) == (0, 0)


def test_registered():
    assert HOOKS.get('BrokenSampleHook') is BrokenSampleHook


def test_log_key_names_the_logged_count():
    runner = SimpleNamespace(
        message_hub=MessageHub.get_instance('test_broken_log_key'), iter=0)
    hook = BrokenSampleHook(log_key='data/skipped')
    hook.before_train_iter(runner, 0, _batch(3, 4))
    assert runner.message_hub.get_scalar('train/data/skipped').current() == 3
    assert 'train/data/broken' not in runner.message_hub.log_scalars
