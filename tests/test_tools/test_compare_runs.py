"""tools/analysis/compare_runs.py on fabricated per-item results."""
import importlib.util
import json
import os

import numpy as np
import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location(
    'uno_compare_tool',
    os.path.join(REPO, 'tools', 'analysis', 'compare_runs.py'))
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)

TAGS = ('counting', 'position', 'colors')


def _write(folder, rng, p_correct, psnr):
    items = dict(
        GenEvalMetric=[dict(index=i, tag=TAGS[i % 3],
                            correct=bool(rng.random() < p_correct))
                       for i in range(96)],
        EditMetric=[dict(index=100 + i, kind='recolor',
                         satisfied=float(rng.random() < 0.5),
                         psnr=psnr + rng.normal()) for i in range(32)])
    folder.mkdir(parents=True)
    (folder / 'per_item.json').write_text(json.dumps(items))
    return str(folder)


def test_a_real_gain_is_found_with_its_interval(tmp_path, capsys,
                                                monkeypatch):
    rng = np.random.default_rng(0)
    a = [_write(tmp_path / f'a{s}', rng, 0.7, 20.0) for s in range(3)]
    b = [_write(tmp_path / f'b{s}', rng, 0.3, 20.0) for s in range(3)]
    table = compare_runs.compare([compare_runs.load(f) for f in a],
                                 [compare_runs.load(f) for f in b])
    overall = table['geneval/overall']
    assert overall['low'] > 0.2 and overall['p_value'] < 0.01
    assert abs(overall['diff'] - (overall['a'] - overall['b'])) < 1e-9
    psnr = table['edit/psnr']
    assert psnr['low'] < 0 < psnr['high']
    assert {'geneval/counting', 'geneval/position'} <= set(table)
    out = tmp_path / 'cmp.md'
    monkeypatch.setattr('sys.argv', ['compare_runs.py', '--a', *a, '--b',
                                     *b, '--names', 'UNO', 'SFT',
                                     '--out', str(out)])
    compare_runs.main()
    assert '| geneval/overall | 96 |' in out.read_text()
    assert 'UNO − SFT' in capsys.readouterr().out


def test_unpaired_folders_are_refused(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    a = _write(tmp_path / 'a', rng, 0.5, 20.0)
    monkeypatch.setattr('sys.argv', ['compare_runs.py', '--a', a, '--b', a,
                                     a])
    with pytest.raises(SystemExit) as exit_:
        compare_runs.main()
    assert exit_.value.code == 2
    assert 'pair them' in capsys.readouterr().err


def test_forest_plot_of_comparisons(tmp_path, capsys):
    """plot_comparisons.py draws compare_runs' JSON files; a metric a file
    lacks is one line, exit 2."""
    spec = importlib.util.spec_from_file_location(
        'uno_plot_comparisons',
        os.path.join(REPO, 'tools', 'analysis', 'plot_comparisons.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    files = []
    for name, diff in (('gain', 0.1), ('null', 0.0)):
        row = dict(diff=diff, low=diff - 0.05, high=diff + 0.05, p_value=0.5)
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps({'geneval/overall': row,
                                    'edit/psnr': row}))
        files.append(str(path))
    out = tmp_path / 'forest.png'
    tool.main([*files, '--metrics', 'geneval/overall', 'edit/psnr',
               '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'gain' in printed and '+0.100 [+0.050, +0.150]' in printed
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(SystemExit) as info:
        tool.main([*files, '--out', str(out)])  # default metrics: absent
    assert info.value.code == 2
    assert 'has no geneval/counting' in capsys.readouterr().err
