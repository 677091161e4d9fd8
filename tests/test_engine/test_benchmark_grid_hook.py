"""BenchmarkGridHook: max_per_group caps each grid, cols and scale lay it
out (the hook was only named in a config check before)."""
import logging
from types import SimpleNamespace

import numpy as np
from PIL import Image

from uno.engine.hooks.benchmark_grid_hook import BenchmarkGridHook


def _outputs(n, tag='single'):
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    return [dict(task='geneval', metadata=dict(tag=tag), image=image,
                 prompt=f'p{i}') for i in range(n)]


def _run(tmp_path, **kw):
    added = {}
    runner = SimpleNamespace(
        work_dir=str(tmp_path), iter=0,
        logger=logging.getLogger('test_benchmark_grid_hook'),
        visualizer=SimpleNamespace(
            add_image=lambda name, img, step: added.update({name: img})))
    hook = BenchmarkGridHook(**kw)
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, outputs=_outputs(5))
    hook.after_test_iter(runner, 1, outputs=_outputs(2, 'two'))
    hook.after_test_epoch(runner)
    return hook, added


def test_max_per_group_cols_and_scale(tmp_path):
    hook, added = _run(tmp_path / 'a', max_per_group=3, cols=2, scale=2)
    assert [len(hook.groups[g]) for g in ('geneval_single',
                                          'geneval_two')] == [3, 2]
    assert sorted(added) == ['geneval_single', 'geneval_two']
    tile = hook.groups['geneval_single'][0][0][0]
    assert tile.size == (8, 8)  # 4 px zoomed by scale=2
    with Image.open(tmp_path / 'a' / 'grids' / 'geneval_single.png') as saved:
        assert saved.size == added['geneval_single'].shape[1::-1]
    h2, w2 = added['geneval_single'].shape[:2]  # 3 tiles, 2 per row

    hook, wide = _run(tmp_path / 'b', max_per_group=3, cols=3, scale=2)
    h3, w3 = wide['geneval_single'].shape[:2]  # 3 tiles in one row
    assert (w3 * 2, h3 * 2) == (w2 * 3, h2)
    hook, big = _run(tmp_path / 'c', max_per_group=3, cols=3, scale=4)
    assert hook.groups['geneval_single'][0][0][0].size == (16, 16)
    assert big['geneval_single'].shape[1] > w3
