"""tools/analysis/gpu_check.py --dry-run: every part builds and, where a
CPU can, runs at toy sizes; the JSON and the Markdown table are written."""
import importlib.util
import json
import os

import pytest
import torch

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location(
    'uno_gpu_check_tool', os.path.join(REPO, 'tools', 'analysis',
                                       'gpu_check.py'))
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

#: parts a CPU can run in the dry run (4 needs NCCL: skipped)
CPU_PARTS = {1, 2, 3, 5, 6}


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip('the dry run is the CPU check')
    out = tmp_path_factory.mktemp('gpu_check')
    gpu_check.main(['--dry-run', '--out', str(out), '--work-dir',
                    str(out / 'work')])
    with open(out / 'gpu_check.json') as f:
        return out, json.load(f)


def test_every_part_has_a_status_and_cpu_parts_pass(dry_run):
    _, result = dry_run
    parts = {r['part']: r for r in result['parts']}
    assert set(parts) == set(gpu_check.PARTS)
    for number, r in parts.items():
        assert r['status'], r
        assert r['seconds'] <= r['budget_s'] + 10, r
        if number in CPU_PARTS:
            assert r['status'] == 'ok', (number, r['error'])
            assert r['figures']['summary'], r
    assert parts[4]['status'].startswith('skipped: needs CUDA')
    assert 'dist_train.sh' in parts[4]['figures']['command']
    # pytest ran and skipped the GPU-marked tests
    assert parts[1]['figures']['skipped'] >= 1
    # what needs CUDA is skipped with a reason, what can run was compared
    backends = parts[2]['figures']['backends']
    assert backends['flex_compiled']['status'].startswith('skipped')
    for name in ('eager_bf16', 'sdpa', 'sdpa_dense', 'flex'):
        assert backends[name]['pass'], (name, backends[name])
    assert all(v['pass'] for v in parts[2]['figures']['masking'].values()
               if 'pass' in v)
    runs = parts[3]['figures']['runs']
    assert runs['sdpa/uno/ckpt_off']['step_s'] > 0
    assert runs['sdpa/uno/ckpt_on']['status'] == 'ok'
    assert parts[3]['figures']['optimizer']['status'] == 'ok'
    assert parts[5]['figures']['images_per_s']['cached'] > 0


def test_markdown_table_lists_every_part(dry_run):
    out, result = dry_run
    text = (out / 'gpu_check.md').read_text()
    assert '| part | status |' in text
    for number, (name, _) in gpu_check.PARTS.items():
        assert f'| {number} {name} |' in text
    assert 'dry run' in text


def test_sizes_scale_and_datasheet_lookup():
    from _gpu_setup import datasheet_tflops, sizes
    full, half = sizes(False), sizes(False, 0.5)
    assert full['throughput']['layers'] == 28
    assert half['throughput']['layers'] == 14
    assert full['throughput']['grid']**2 == 1024
    assert full['correctness']['layer']['hidden_size'] == 3584
    assert datasheet_tflops('NVIDIA H100 80GB HBM3') == 989.0
    assert datasheet_tflops('NVIDIA H200') == 989.0
    assert datasheet_tflops('NVIDIA A100-SXM4-80GB') == 312.0
    assert datasheet_tflops('NVIDIA H100 PCIe') == 756.0
    assert datasheet_tflops('Some GPU') is None


def test_a_failing_part_is_recorded_and_the_run_goes_on(
        tmp_path, monkeypatch):
    def boom(ctx):
        ctx['figures']['partial'] = 1
        raise ValueError('first line\nthe last line')

    real = gpu_check.part_function
    monkeypatch.setattr(gpu_check, 'part_function',
                        lambda n: boom if n == 6 else real(n))
    gpu_check.main(['--dry-run', '--parts', '4,6', '--out', str(tmp_path),
                    '--work-dir', str(tmp_path / 'work')])
    text = (tmp_path / 'gpu_check.json').read_text()
    parts = {r['part']: r for r in json.loads(text)['parts']}
    assert parts[6]['status'] == 'failed'
    assert parts[6]['error'] == 'ValueError: the last line'
    assert parts[6]['figures'] == {'partial': 1}
    assert parts[4]['status'].startswith('skipped')
