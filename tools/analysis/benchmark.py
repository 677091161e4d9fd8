"""How much of the machine uno turns into training: seven figures, one run.

Every figure is a ratio of two things measured in this run, on this
device and dtype, taking turns (best of ``--repeats`` rounds after a
warm-up), because shared machines drift and absolute times do not carry
over between runs:

1. ``mfu``: model FLOP/s of a UNO training step (counted by
   ``tools/analysis/_flops.py``) over the peak matmul FLOP/s measured here;
2. ``uno_overhead``: UNO step time over flow-only SFT step time on the
   same samples, next to the token ratio of the two sequences;
3. ``mot_vs_dense``: a MoT training step (mixed und/gen tokens, every
   expert trainable) over transformers' Qwen2 of the same per-token size
   on the same tokens (the same samples as a regular batch);
4. ``packing``: tokens/s of the packed sequence over a padded batch of the
   same samples (3:1 length spread);
5. ``sampling``: images/s of the flow sampler with the KV-cached condition
   and batched CFG over recomputing the condition every step;
6. ``data``: samples/s of the ShapesWorld loader (render, tensor
   transform, packing, in a worker) over what the UNO step consumes;
7. ``memory``: peak memory of the UNO step and its step time, with
   activation checkpointing (``model.llm.activation_checkpointing``) over
   without.

Example:
    python tools/analysis/benchmark.py --out work_dirs/benchmark.json
    python tools/analysis/benchmark.py --quick   # a tiny smoke run
"""
import json
import os
import os.path as osp
import sys
import time

try:
    import uno as _installed  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..',
                                            '..')))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser  # noqa: E402

import torch  # noqa: E402

import _bench_setup as bs  # noqa: E402
from uno.models.sampling import FlowSampler  # noqa: E402
from _flops import model_flops  # noqa: E402

TOKENIZER = type('Specials', (), dict(bos_id=bs.BOS, eos_id=bs.EOS,
                                      vision_start_id=bs.VS,
                                      vision_end_id=bs.VE))()
TARGETS = dict(mfu=0.35, uno_overhead=1.1, mot_vs_dense=1.15, packing=1.3,
               sampling=2.0, data=5.0, memory=(0.30, 1.4))


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda if available)')
    parser.add_argument('--preset', choices=sorted(bs.PRESETS),
                        help='model and batch sizes (default: by device)')
    parser.add_argument('--quick', action='store_true',
                        help="the tiny 'quick' preset (a smoke run)")
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed rounds per figure (after a warm-up)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (0: torch default)')
    parser.add_argument('--workers', type=int, default=1,
                        help='dataloader workers of the data figure')
    parser.add_argument('--dense-attention', action='store_true',
                        help='sdpa over the dense packed mask instead of '
                        'per-sample blocks (the pre-optimisation path)')
    parser.add_argument('--out', default='work_dirs/benchmark.json',
                        help='where to write the JSON')
    return parser.parse_args(argv)


def _best(times):
    return min(times)


def _step(trainer, batch, wrapper, device):
    def run():
        with bs.autocast(device):
            trainer.train_step(batch, wrapper)
    return run


def figure_training(ctx) -> dict:
    """Figures 1, 2 and 7: UNO and SFT steps, checkpointing on and off."""
    p, dev = ctx['preset'], ctx['device']
    uno_batch, sft_batch = bs.shapes_batch(p, True), bs.shapes_batch(p, False)
    uno = bs.build_trainer(p, bs.UNO_OBJECTIVES, True, ctx['attention'], dev)
    sft = bs.build_trainer(p, dict(flow=bs.UNO_OBJECTIVES['flow']), True,
                           ctx['attention'], dev)
    wu, ws = bs.optim_wrapper(uno), bs.optim_wrapper(sft)
    llm = uno.model.cfg  # shared with the decoder: a runtime switch

    def uno_ckpt():
        llm.activation_checkpointing = True
        try:
            _step(uno, uno_batch, wu, dev)()
        finally:
            llm.activation_checkpointing = False

    peak = bs.peak_matmul(dev, ctx['dtype'])
    times = bs.interleaved(dict(uno=_step(uno, uno_batch, wu, dev),
                                sft=_step(sft, sft_batch, ws, dev),
                                uno_ckpt=uno_ckpt), ctx['repeats'], dev)
    peak2 = bs.peak_matmul(dev, ctx['dtype'])
    if peak2['flops'] > peak['flops']:
        peak = peak2
    flops = model_flops(uno.model, uno_batch)['total'].total
    t_uno, t_sft = _best(times['uno']), _best(times['sft'])
    t_ckpt = _best(times['uno_ckpt'])
    mfu = flops / t_uno / peak['flops']
    tokens = uno_batch.num_tokens / sft_batch.num_tokens
    mem = {}
    for name, fn in (('off', _step(uno, uno_batch, wu, dev)),
                     ('on', uno_ckpt)):
        mem[name] = bs.step_memory(fn, dev, uno, wu.optimizer, uno_batch)
    saved = 1 - mem['on']['total'] / mem['off']['total']
    ckpt_ratio = t_ckpt / t_uno
    lo, hi = TARGETS['memory']
    samples = uno_batch.num_samples
    ctx['consumption'] = samples / t_uno
    return dict(
        mfu=dict(value=mfu, target=f'>= {TARGETS["mfu"]:.0%}',
                 met=mfu >= TARGETS['mfu'], model_flops=flops,
                 step_s=t_uno, achieved_flops=flops / t_uno,
                 peak_flops=peak['flops'], peak_matmul_size=peak['size'],
                 tokens=uno_batch.num_tokens, times=times['uno']),
        uno_overhead=dict(
            value=(t_uno / t_sft) / tokens,
            target=f'<= {TARGETS["uno_overhead"]} (time ratio / token '
            'ratio)', met=t_uno / t_sft <= TARGETS['uno_overhead'] * tokens,
            time_ratio=t_uno / t_sft, token_ratio=tokens,
            uno_tokens=uno_batch.num_tokens, sft_tokens=sft_batch.num_tokens,
            uno_s=t_uno, sft_s=t_sft, sft_times=times['sft']),
        memory=dict(
            value=saved, target=f'>= {lo:.0%} less peak for <= {hi}x time',
            met=saved >= lo and ckpt_ratio <= hi, time_ratio=ckpt_ratio,
            peak_off_bytes=mem['off']['total'],
            peak_on_bytes=mem['on']['total'], method=mem['off']['method'],
            off=mem['off'], on=mem['on'], ckpt_s=t_ckpt,
            ckpt_times=times['uno_ckpt']))


def figure_peer_and_packing(ctx) -> dict:
    """Figures 3 and 4: MoT against Qwen2, packed against padded."""
    p, dev = ctx['preset'], ctx['device']
    mot = bs.build_trainer(p, dict(flow=bs.UNO_OBJECTIVES['flow']), False,
                           ctx['attention'], dev)
    wm = bs.optim_wrapper(mot)
    num, length = p['peer']
    batch = bs.collate(p)(bs.t2i_plans(p, [length] * num))
    hf = bs.hf_peer(p, dev)
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-5)
    ids = batch.input_ids.view(num, length).to(dev)

    def dense():
        with bs.autocast(dev):
            loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = bs.interleaved(dict(mot=_step(mot, batch, wm, dev), dense=dense),
                           ctx['repeats'], dev)
    ratio = _best(times['mot']) / _best(times['dense'])
    count, shortest = p['spread']
    lengths = torch.linspace(shortest, 3 * shortest, count).round().long()
    lengths = lengths.tolist()
    packed = bs.collate(p)(bs.t2i_plans(p, lengths, seed=1))
    padded = bs.collate(p)(bs.t2i_plans(p, lengths, max(lengths), seed=1))
    pt = bs.interleaved(dict(packed=_step(mot, packed, wm, dev),
                             padded=_step(mot, padded, wm, dev)),
                        ctx['repeats'], dev)
    real = sum(lengths)
    speed = {k: real / _best(v) for k, v in pt.items()}
    gain = speed['packed'] / speed['padded']
    mot_n = dict(und=batch.und_index.numel(), gen=batch.gen_index.numel())
    return dict(
        mot_vs_dense=dict(
            value=ratio, target=f'<= {TARGETS["mot_vs_dense"]}x',
            met=ratio <= TARGETS['mot_vs_dense'], tokens=num * length,
            routed=mot_n, mot_s=_best(times['mot']),
            dense_s=_best(times['dense']), peer='transformers '
            f'Qwen2ForCausalLM, sdpa, batch {num} x {length}',
            times=times),
        packing=dict(
            value=gain, target=f'>= {TARGETS["packing"]}x',
            met=gain >= TARGETS['packing'], lengths=lengths,
            real_tokens=real, padded_tokens=padded.num_tokens,
            packed_tokens_per_s=speed['packed'],
            padded_tokens_per_s=speed['padded'], times=pt))


def figure_sampling(ctx) -> dict:
    """Figure 5: cached condition + batched CFG against recomputing."""
    p, dev = ctx['preset'], ctx['device']
    s = p['sampling']
    model = bs.build_trainer(p, dict(flow=bs.UNO_OBJECTIVES['flow']), False,
                             ctx['attention'], dev).model.eval()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(6, p['llm']['vocab_size'], (s['batch'],
                            s['prompt']), generator=g).tolist()
    images = {}

    def run(cache, steps=s['steps'], keep=True):
        sampler = FlowSampler(num_steps=steps, cfg_scale=4.0,
                              use_kv_cache=cache)

        def go():
            with bs.autocast(dev):
                out = sampler.sample(model, prompts, TOKENIZER,
                                     p['image_size'],
                                     torch.Generator(dev).manual_seed(0))
            if keep:
                images[cache] = out.float()
        return go

    run(True, 2, False)(), run(False, 2, False)()  # warm-up
    times = bs.interleaved(dict(recompute=run(False), cached=run(True)),
                           max(1, ctx['repeats'] - 1), dev, warmup=0)
    rate = {k: s['batch'] / _best(v) for k, v in times.items()}
    gain = rate['cached'] / rate['recompute']
    grid = (p['image_size'] // p['patch'])**2 + 2
    cond, uncond = s['prompt'] + 2, 2
    bound = (cond + uncond + 2 * grid) / (2 * grid)
    return dict(sampling=dict(
        value=gain, target=f'>= {TARGETS["sampling"]}x',
        met=gain >= TARGETS['sampling'], images_per_s=rate,
        steps=s['steps'], prompt_tokens=s['prompt'], batch=s['batch'],
        image_tokens=grid, token_bound=bound,
        max_abs_diff=float((images[True] - images[False]).abs().max()),
        times=times))


def figure_data(ctx) -> dict:
    """Figure 6: loader throughput against the UNO step's consumption."""
    p = ctx['preset']
    loader = torch.utils.data.DataLoader(
        bs.shapes_dataset(p, True), batch_size=p['samples'], shuffle=True,
        num_workers=ctx['workers'], collate_fn=bs.collate(p),
        persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    for _ in range(p['data_batches']):
        next(it)
    rate = p['data_batches'] * p['samples'] / (time.perf_counter() - start)
    del it
    headroom = rate / ctx['consumption']
    return dict(data=dict(
        value=headroom, target=f'>= {TARGETS["data"]}x',
        met=headroom >= TARGETS['data'], loader_samples_per_s=rate,
        step_samples_per_s=ctx['consumption'], workers=ctx['workers'],
        batch=p['samples']))


ROWS = (
    ('mfu', 'MFU (UNO step)', lambda r: f"{r['value']:.1%}"),
    ('uno_overhead', 'UNO / SFT time per token ratio',
     lambda r: f"{r['value']:.2f} (time {r['time_ratio']:.2f}x, tokens "
     f"{r['token_ratio']:.2f}x)"),
    ('mot_vs_dense', 'MoT step / dense Qwen2 step',
     lambda r: f"{r['value']:.2f}x"),
    ('packing', 'packed / padded tokens/s', lambda r: f"{r['value']:.2f}x"),
    ('sampling', 'cached+CFG / recompute images/s',
     lambda r: f"{r['value']:.2f}x (bound {r['token_bound']:.2f}x)"),
    ('data', 'loader / step samples/s', lambda r: f"{r['value']:.1f}x"),
    ('memory', 'checkpointing: peak saved, time',
     lambda r: f"{r['value']:.0%} less, {r['time_ratio']:.2f}x time"),
)


def table(results: dict) -> str:
    lines = [f'{"figure":<34} {"measured":<40} {"target":<32} met']
    for key, name, fmt in ROWS:
        r = results[key]
        lines.append(f'{name:<34} {fmt(r):<40} {r["target"]:<32} '
                     f'{"yes" if r["met"] else "NO"}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    name = 'quick' if args.quick else (args.preset or (
        'gpu' if device.startswith('cuda') else 'cpu'))
    preset = bs.PRESETS[name]
    ctx = dict(preset=preset, device=device, workers=args.workers,
               repeats=args.repeats or preset['repeats'],
               dtype=torch.bfloat16 if device.startswith('cuda') else
               torch.float32,
               attention=dict(type='sdpa', blocked=False)
               if args.dense_attention else dict(type='sdpa'))
    start = time.perf_counter()
    meta = dict(machine=bs.machine(), preset=name, config=preset,
                device=device, dtype=str(ctx['dtype']),
                date=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                command=' '.join([osp.basename(sys.executable)] + sys.argv),
                attention=ctx['attention'], repeats=ctx['repeats'])
    results = {}
    for figure in (figure_training, figure_peer_and_packing,
                   figure_sampling, figure_data):
        results.update(figure(ctx))
        print(f'[{time.perf_counter() - start:6.1f} s] {figure.__name__}',
              flush=True)
    meta['seconds'] = time.perf_counter() - start
    meta['load_avg_after'] = list(os.getloadavg())
    print(f"\n{name} preset on {device} ({ctx['dtype']}, "
          f"{torch.get_num_threads()} threads), {meta['seconds']:.0f} s, "
          f"load average {meta['machine']['load_avg'][0]:.2f} -> "
          f"{meta['load_avg_after'][0]:.2f}")
    print(table(results))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(meta=meta, **results), f, indent=1, default=str)
        print(f'wrote {args.out}')
    return results


if __name__ == '__main__':
    main()
