"""tools/_cli.py: malformed command-line options are one line, exit 2."""
import argparse
import os.path as osp
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools'))
from _cli import cfg_options_action  # noqa: E402


def _parser():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+',
                        action=cfg_options_action())
    return parser


@pytest.mark.parametrize('item,words', [
    ('train_cfg.max_iters', "'train_cfg.max_iters': use KEY=VALUE"),
    ('=5', "'=5': use KEY=VALUE"),
    ('model.freeze=[1,2', 'unbalanced brackets'),
    ('a.b=(1,2', 'unbalanced brackets'),
])
def test_malformed_cfg_option_is_one_line_and_exit_2(item, words, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(['--cfg-options', item])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --cfg-options') and words in err
    assert err.count('\n') == 1


def test_well_formed_options_parse_as_mmengine_does():
    args = _parser().parse_args(
        ['--cfg-options', 'train_cfg.max_iters=5', 'a.b=[1,2]', 'c=x'])
    assert args.cfg_options == {'train_cfg.max_iters': 5, 'a.b': [1, 2],
                                'c': 'x'}
