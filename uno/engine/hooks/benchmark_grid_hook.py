"""Save what the benchmarks generated as captioned PNG grids."""
import os
import os.path as osp
from collections import defaultdict

import numpy as np
from mmengine.hooks import Hook

from uno.registry import HOOKS
from uno.utils.visualization import draw_grid, load_font, zoom


@HOOKS.register_module()
class BenchmarkGridHook(Hook):
    """During ``tools/test.py``, one grid per GenEval tag, edit kind and
    of the captions, saved to ``<work_dir>/grids/`` and logged through the
    visualizer (MLflow keeps one PNG per step).

    Args:
        max_per_group (int): Tiles per grid. Defaults to 16.
        scale (int): Nearest-neighbour zoom of each image. Defaults to 3.
        cols (int): Tiles per row. Defaults to 8.
    """
    priority = 'LOW'

    def __init__(self, max_per_group: int = 16, scale: int = 3,
                 cols: int = 8):
        self.max_per_group, self.scale, self.cols = max_per_group, scale, cols
        self.groups = defaultdict(list)

    def before_test(self, runner) -> None:
        self.groups.clear()

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        for out in outputs or []:
            if not isinstance(out, dict) or 'task' not in out:
                continue
            name, tile = self._tile(out)
            if len(self.groups[name]) < self.max_per_group:
                self.groups[name].append(tile)

    def _tile(self, out: dict):
        z = self.scale
        if out['task'] == 'geneval':
            meta = out['metadata']
            return f"geneval_{meta['tag']}", ([zoom(out['image'], z)],
                                              [out['prompt']])
        if out['task'] == 'edit':
            pair = out['pair']
            return f'edit_{pair.kind}', (
                [zoom(out['source'], z), zoom(out['output'], z)],
                [pair.instruction])
        return 'caption', ([zoom(np.asarray(out['image']), z)],
                           [out['caption'] or '(empty)'])

    def after_test_epoch(self, runner, metrics=None) -> None:
        if not self.groups:
            return
        folder = osp.join(runner.work_dir, 'grids')
        os.makedirs(folder, exist_ok=True)
        font = load_font()
        for name, tiles in sorted(self.groups.items()):
            grid = draw_grid(tiles, self.cols, font)
            grid.save(osp.join(folder, f'{name}.png'))
            runner.visualizer.add_image(name, np.asarray(grid),
                                        step=runner.iter)
        runner.logger.info(f'benchmark grids saved to {folder}')
