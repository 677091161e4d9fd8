"""Print every uno registry and the names registered in it.

    python tools/misc/list_registry.py [--registry NAME]

Parents' names (mmengine's hooks, loops, optimizers...) are reachable
from uno's child registries too; ``--with-parents`` lists them as well.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ROOT, ArgumentParser  # noqa: E402,F401 (repo on sys.path)


def main():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--registry', help='only this registry (e.g. '
                        'OBJECTIVES)')
    parser.add_argument('--with-parents', action='store_true',
                        help="also list the mmengine parents' names")
    args = parser.parse_args()
    from uno import registry
    names = [n for n in registry.__all__ if n.isupper()]
    if args.registry:
        if args.registry.upper() not in names:
            from uno.utils.config_check import did_you_mean
            print(f'error: no registry {args.registry!r}: '
                  f'{did_you_mean(args.registry.upper(), names)}',
                  file=sys.stderr)
            sys.exit(2)
        names = [args.registry.upper()]
    for name in names:
        reg = getattr(registry, name)
        own = registry.registry_names(reg)
        print(f'{name} ({reg.scope}.{reg.name}, from '
              f"{', '.join(reg._locations)}): {len(own)}")
        for item in own:
            print(f'    {item}')
        if args.with_parents and reg.parent is not None:
            parent = sorted(reg.parent.module_dict)
            print(f'    + {len(parent)} from mmengine: '
                  f"{', '.join(parent)}")


if __name__ == '__main__':
    main()
