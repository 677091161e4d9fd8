"""Print a fully resolved config, diff it against another, or validate it.

Examples::

    python tools/misc/print_config.py configs/uno/CONFIG.py
    python tools/misc/print_config.py BASELINE.py --diff ABLATION.py
    python tools/misc/print_config.py CONFIG.py --validate \\
        --cfg-options objectives.cap.weight=0.5

``--diff`` prints one line per changed flattened key, sorted, and nothing
else on stdout: ``key: old -> new``, ``+ key: new`` (only in OTHER) and
``- key: old`` (only in CONFIG). ``--cfg-options`` applies to CONFIG only.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction

try:
    import uno  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0,
                    osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from uno.utils import config_check  # noqa: E402
from uno.utils.config_diff import MISSING, config_diff  # noqa: E402
from uno.errors import UnoConfigError  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description='Print, diff or validate a resolved config.')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of CONFIG, xxx=yyy format')
    parser.add_argument(
        '--diff',
        metavar='OTHER',
        help='print only the flattened keys that differ from OTHER')
    parser.add_argument(
        '--validate',
        action='store_true',
        help='check top-level keys, component types and arguments')
    return parser.parse_args()


def format_diff(diff) -> list:
    """Format :func:`config_diff` rows as ``key: old -> new`` lines."""
    lines = []
    for key, old, new in diff:
        if old is MISSING:
            lines.append(f'+ {key}: {new!r}')
        elif new is MISSING:
            lines.append(f'- {key}: {old!r}')
        else:
            lines.append(f'{key}: {old!r} -> {new!r}')
    return lines


def main():
    args = parse_args()
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        if args.validate:
            config_check.validate_config(cfg)
        other = Config.fromfile(args.diff) if args.diff else None
    except (UnoConfigError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    if args.validate and other is not None:
        try:
            config_check.validate_config(other)
        except UnoConfigError as e:
            print(f'error: {args.diff}: {e}', file=sys.stderr)
            sys.exit(2)

    if other is None:
        print(cfg.pretty_text)
        return
    print(f'--- {args.config}\n+++ {args.diff}', file=sys.stderr)
    for line in format_diff(config_diff(cfg, other)):
        print(line)


if __name__ == '__main__':
    main()
