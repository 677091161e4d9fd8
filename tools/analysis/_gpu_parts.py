"""In-process training parts of tools/analysis/gpu_check.py (2 and 3).

Each part takes the run context ``ctx`` (``device``, ``dry``, ``sizes``,
``left()`` seconds left of its budget) and returns a dict of figures with
a one-line ``summary``; it raises only when nothing could be measured.
Sub-measurements that fail are recorded with their error line and the
part goes on; ``problems`` lists them, and the runner marks a part with
problems as failed.
"""
import contextlib
import copy
import importlib.util
import time
import warnings

import torch

import _gpu_setup as gs

BF16 = torch.bfloat16
#: norm-wise relative error allowed against eager fp32. bf16 keeps 8
#: significant bits (unit roundoff 2**-9 ~ 2e-3); rounding the inputs of
#: every matmul, norm and softmax over two layers gives ~1e-2, gradients
#: (one more chain of bf16 matmuls) somewhat more. A backend also passes
#: when it is no worse than twice eager attention's own bf16 error.
TOL = dict(out=2e-2, grad=5e-2)
#: (name, attention, autocast over fp32 weights); compiled flex last (it
#: compiles for tens of seconds)
CORRECTNESS = (('eager_bf16', dict(type='eager'), False),
               ('sdpa', dict(type='sdpa'), False),
               ('sdpa_dense', dict(type='sdpa', blocked=False), False),
               ('flex', dict(type='flex'), False),
               ('xformers', dict(type='xformers'), False),
               ('sdpa+autocast', dict(type='sdpa'), True),
               ('flex+autocast', dict(type='flex'), True),
               ('xformers+autocast', dict(type='xformers'), True),
               ('flex_compiled', dict(type='flex', compile=True), False))
THROUGHPUT = (('sdpa', dict(type='sdpa')),
              ('sdpa_dense', dict(type='sdpa', blocked=False)),
              ('xformers', dict(type='xformers')),
              ('flex_compiled', dict(type='flex', compile=True)))


def cpu_skip(name: str, device, train: bool):
    """Why ``name`` cannot run on this device (None: it can)."""
    if 'xformers' in name and importlib.util.find_spec('xformers') is None:
        return 'skipped: xformers not installed'
    if gs.is_cuda(device):
        return None
    if 'xformers' in name or 'compiled' in name:
        return 'skipped: needs CUDA'
    if 'flex' in name and train:
        return 'skipped: needs CUDA (flex has no CPU backward)'
    return None


def _set_attention(model, cfg: dict) -> None:
    from uno.registry import ATTENTION
    warnings.filterwarnings(
        'ignore', message='.*flex_attention called without torch.compile')
    model.attention = ATTENTION.build(cfg)


def _autocast(device, on: bool):
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=BF16)


def _random_noisy(batch, model, seed: int = 0):
    """Random noisy latents and timesteps for ``batch``'s noisy images."""
    from uno.structures import NoisyLatents
    g = torch.Generator().manual_seed(seed)
    n, c = batch.noisy_index.numel(), model.latent_encoder.latent_dim
    return NoisyLatents(
        torch.randn(n, c, generator=g).to(batch.device),
        torch.rand(batch.noisy_images.numel(), generator=g).to(batch.device))


def _run(model, batch, noisy, weights, grad: bool, autocast: bool):
    """Hidden states and parameter gradients of ``sum(hidden * weights)``.
    """
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad), _autocast(batch.device, autocast):
        hidden = model(batch, noisy).hidden
    if grad:
        (hidden.float() * weights).sum().backward()
    grads = {n: p.grad.detach().float() for n, p in model.named_parameters()
             if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return hidden.detach().float(), grads


# --------------------------------------------------------------------------
def part_correctness(ctx) -> dict:
    """Part 2: every backend in bf16 against eager fp32 on a 2-layer MoT
    of BAGEL-7B's layer shapes, forward and backward, and prompt masking
    with 1 layer."""
    dev, s = ctx['device'], ctx['sizes']['correctness']
    fig = ctx['figures']
    fig.update(tolerance=dict(TOL, rule='norm-wise relative error vs eager '
                              "fp32; or <= 2x eager bf16's own error"),
               layers=s['layers'], layer=s['layer'], problems=[])
    fig['masking'] = masking = {}
    _masking(ctx, s, masking)
    gs.free_memory(dev)
    cfg = gs.model_cfg(s, dict(type='eager'))
    ref_model = gs.build_model(cfg, dev, torch.float32)
    low = copy.deepcopy(ref_model).to(BF16)
    gs.rope_to_fp32(low, s['layer']['rope_theta'])
    batch = gs.pack(s, gs.uno_plans(s), dev)
    noisy = _random_noisy(batch, ref_model)
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(batch.num_tokens, s['layer']['hidden_size'],
                          generator=g).to(dev)
    ref_out, ref_grads = _run(ref_model, batch, noisy, weights, True,
                              False)
    fig.update(tokens=batch.num_tokens, samples=batch.num_samples)
    fig['backends'] = results = {}
    problems = fig['problems']
    floor = dict(out=0.0, grad=0.0)
    for name, att, autocast in CORRECTNESS:
        train = cpu_skip(name, dev, True) is None
        why = cpu_skip(name, dev, False)
        if why:
            results[name] = dict(status=why)
            continue
        if ctx['left']() < 5:
            results[name] = dict(status='skipped: time budget')
            continue
        model = ref_model if autocast else low
        start = time.perf_counter()
        try:
            _set_attention(model, att)
            out, grads = _run(model, batch, noisy, weights, train,
                              autocast)
        except Exception as err:  # noqa: BLE001 (recorded, part goes on)
            results[name] = dict(status='failed', error=gs.last_line(err))
            problems.append(f'{name}: {gs.last_line(err)}')
            gs.free_memory(dev)
            continue
        r = dict(status='ok', seconds=time.perf_counter() - start,
                 out_rel=gs.rel_err(out, ref_out), train=train)
        if train:
            errs = {k: gs.rel_err(v, ref_grads[k]) for k, v in grads.items()
                    if k in ref_grads}
            worst = max(errs, key=errs.get)
            r.update(grad_rel=errs[worst], worst_grad=worst,
                     grads_compared=len(errs),
                     grads_missing=sorted(set(ref_grads) - set(grads))[:5])
        if name == 'eager_bf16':
            floor = dict(out=r['out_rel'], grad=r.get('grad_rel', 0.0))
        tol_out = max(TOL['out'], 2 * floor['out'])
        tol_grad = max(TOL['grad'], 2 * floor['grad'])
        r['pass'] = r['out_rel'] <= tol_out and (
            not train or (r['grad_rel'] <= tol_grad
                          and not r['grads_missing']))
        if not r['pass']:
            problems.append(f'{name}: out {r["out_rel"]:.1e}, grad '
                            f'{r.get("grad_rel", float("nan")):.1e} over '
                            'tolerance')
        results[name] = r
    problems += [f'masking {k}: {v.get("error", "changed")}'
                 for k, v in masking.items()
                 if v['status'] == 'failed' or v.get('pass') is False]
    ran = [k for k, v in results.items() if 'pass' in v]
    ok = [k for k in ran if results[k]['pass']]
    m_ran = [k for k, v in masking.items() if 'pass' in v]
    fig['summary'] = (
        f'{len(ok)}/{len(ran)} run variants within tolerance '
        f'({", ".join(ok)}); prompt masking holds for '
        f'{sum(masking[k]["pass"] for k in m_ran)}/{len(m_ran)} backends')
    return fig


def _masking(ctx, s: dict, out: dict) -> None:
    """Caption and metaquery outputs of a 1-layer bf16 model do not move
    when every prompt id changes (they see the noisy image only); the
    noisy image's outputs do (it sees the prompt)."""
    dev = ctx['device']
    one = dict(s, layers=1)
    model = gs.build_model(gs.model_cfg(one, dict(type='eager')), dev, BF16)
    a = gs.pack(one, gs.uno_plans(one), dev)
    b = gs.pack(one, gs.uno_plans(one, prompt_shift=7), dev)
    noisy_a, noisy_b = _random_noisy(a, model), _random_noisy(b, model)
    rows = torch.cat([a.ce_index, a.query_index])
    for name, att in (('eager', dict(type='eager')),
                      ('sdpa', dict(type='sdpa')),
                      ('sdpa_dense', dict(type='sdpa', blocked=False)),
                      ('flex', dict(type='flex')),
                      ('xformers', dict(type='xformers'))):
        why = cpu_skip(name, dev, False)
        if why:
            out[name] = dict(status=why)
            continue
        try:
            _set_attention(model, att)
            with torch.no_grad():
                ha = model(a, noisy_a).hidden.float()
                hb = model(b, noisy_b).hidden.float()
        except Exception as err:  # noqa: BLE001
            out[name] = dict(status='failed', error=gs.last_line(err))
            continue
        kept = float((ha[rows] - hb[rows]).abs().max())
        moved = float((ha[a.noisy_index] - hb[a.noisy_index]).abs().max())
        scale = float(ha[rows].abs().max())
        out[name] = dict(status='ok', caption_mq_max_abs_diff=kept,
                         noisy_max_abs_diff=moved, rows=rows.numel())
        out[name]['pass'] = kept <= 1e-3 * scale and moved > 0


# --------------------------------------------------------------------------
def _objectives(objectives: dict, model, device):
    from uno.objectives import ObjectiveSet
    with gs.build_on(device, BF16):
        objs = ObjectiveSet(objectives)
        objs.setup(model)
    return objs


def _train_step(model, objs, batch, params, opt=None):
    def step():
        prepared = objs.prepare(model, batch, None)
        out = model(batch, prepared.noisy,
                    return_layers=objs.requires_layers)
        total, _ = objs(out, batch, prepared)
        total.backward()
        if opt is not None:
            opt.step()
        for p in params:
            p.grad = None
    return step


def part_throughput(ctx) -> dict:
    """Part 3: UNO and SFT training steps of the full-depth bf16 model
    (und side frozen), checkpointing on/off, every backend: step time,
    tokens/s, peak memory, MFU against the datasheet and a measured GEMM.
    """
    from _flops import model_flops
    dev, s = ctx['device'], ctx['sizes']['throughput']
    fig = ctx['figures']
    name = torch.cuda.get_device_name() if gs.is_cuda(dev) else None
    gemm = gs.gemm_peak(dev, ctx['sizes']['gemm'], BF16)
    sheet = gs.datasheet_tflops(name)
    fig.update(gpu=name, datasheet_tflops=sheet, gemm=gemm,
               layers=s['layers'], layer=s['layer'],
               samples=len(s['prompts']),
               latent_tokens_per_image=s['grid']**2,
               measured='forward + backward (gradients of the trainable '
               'gen side, und frozen), no optimizer; the optimizer step is '
               'timed separately')
    model = gs.build_model(gs.model_cfg(s, dict(type='sdpa'), vit=s['vit']),
                           dev, BF16).train()
    objs = dict(uno=_objectives(gs.UNO_OBJECTIVES, model, dev),
                sft=_objectives(gs.SFT_OBJECTIVES, model, dev))
    vit_stride = s['vit']['patch_size']
    batches = dict(uno=gs.pack(s, gs.uno_plans(s, True), dev, vit_stride),
                   sft=gs.pack(s, gs.uno_plans(s, False), dev))
    flops = {k: model_flops(model, b)['total'].total
             for k, b in batches.items()}
    params = [p for m in (model, objs['uno'], objs['sft'])
              for p in m.parameters() if p.requires_grad]
    fig.update(trainable_params=sum(p.numel() for p in params),
               total_params=sum(p.numel() for p in model.parameters()),
               model_tflops={k: v / 1e12 for k, v in flops.items()},
               tokens={k: b.num_tokens for k, b in batches.items()})
    fig['runs'], fig['problems'] = runs, problems = {}, []
    plan = [(b, k, False) for b, _ in THROUGHPUT for k in ('uno', 'sft')]
    plan[2:2] = [('sdpa', 'uno', True), ('sdpa', 'sft', True)]
    for backend, kind, ckpt in plan:
        key = f'{backend}/{kind}/ckpt_{"on" if ckpt else "off"}'
        why = cpu_skip(backend, dev, True)
        if why or ctx['left']() < 15:
            runs[key] = dict(status=why or 'skipped: time budget')
            continue
        runs[key] = r = _measure(ctx, model, objs[kind], batches[kind],
                                 params, backend, ckpt)
        if r['status'] == 'ok':
            t = r['step_s']
            r.update(tokens=batches[kind].num_tokens,
                     tokens_per_s=batches[kind].num_tokens / t,
                     model_tflops=flops[kind] / 1e12,
                     achieved_tflops=flops[kind] / t / 1e12,
                     mfu_gemm=flops[kind] / t / 1e12 / gemm['tflops'],
                     mfu_datasheet=None if sheet is None else
                     flops[kind] / t / 1e12 / sheet)
        elif r['status'] == 'failed':
            problems.append(f'{key}: {r["error"]}')
            if r.get('oom') and not ckpt:  # retry with checkpointing
                runs[key + '_retry'] = _measure(ctx, model, objs[kind],
                                                batches[kind], params,
                                                backend, True)
    fig['optimizer'] = _optimizer_step(ctx, model, objs['uno'],
                                       batches['uno'], params)
    fig['profile'] = _profile(ctx, model, objs['uno'], batches['uno'],
                              params)
    ratios = {}
    for backend, _ in THROUGHPUT:
        u, f = (runs.get(f'{backend}/{k}/ckpt_off', {}) for k in
                ('uno', 'sft'))
        if u.get('status') == 'ok' and f.get('status') == 'ok':
            ratios[backend] = dict(
                time_ratio=u['step_s'] / f['step_s'],
                token_ratio=u['tokens'] / f['tokens'],
                flop_ratio=flops['uno'] / flops['sft'])
    best = runs.get('sdpa/uno/ckpt_off', {})
    summary = 'no UNO step measured'
    if best.get('status') == 'ok':
        mfu = best['mfu_datasheet']
        summary = (f"UNO sdpa {best['step_s']:.3f} s/step, "
                   f"{best['tokens_per_s']:.0f} tok/s, MFU "
                   f"{'n/a' if mfu is None else f'{mfu:.1%}'} datasheet / "
                   f"{best['mfu_gemm']:.1%} GEMM; UNO/SFT time "
                   f"{ratios.get('sdpa', {}).get('time_ratio', 0):.2f}x "
                   f"for {ratios.get('sdpa', {}).get('token_ratio', 0):.2f}x"
                   ' tokens')
    fig.update(summary=summary, uno_vs_sft=ratios)
    return fig


def _measure(ctx, model, objs, batch, params, backend, ckpt) -> dict:
    dev = ctx['device']
    model.cfg.activation_checkpointing = ckpt  # shared with the decoder
    try:
        _set_attention(model, dict(THROUGHPUT)[backend])
        step = _train_step(model, objs, batch, params)
        start = time.perf_counter()
        step()  # warm-up (and compilation for flex)
        first = time.perf_counter() - start
        gs.reset_peak(dev)
        times = gs.timed(step, dev, ctx['sizes']['throughput']['repeats'],
                         warmup=0)
        return dict(status='ok', step_s=min(times), times=times,
                    first_step_s=first, peak_gib=gs.peak_gib(dev),
                    checkpointing=ckpt)
    except Exception as err:  # noqa: BLE001
        for p in params:
            p.grad = None
        gs.free_memory(dev)
        return dict(status='failed', error=gs.last_line(err),
                    oom=gs.is_oom(err), checkpointing=ckpt)
    finally:
        model.cfg.activation_checkpointing = False


def _profile(ctx, model, objs, batch, params) -> dict:
    """Where the UNO step's time goes (sdpa, no checkpointing)."""
    if ctx['left']() < 20:
        return dict(status='skipped: time budget')
    try:
        _set_attention(model, dict(type='sdpa'))
        step = _train_step(model, objs, batch, params)
        return dict(status='ok', **gs.top_kernels(step, ctx['device']))
    except Exception as err:  # noqa: BLE001
        for p in params:
            p.grad = None
        return dict(status='failed', error=gs.last_line(err))


def _optimizer_step(ctx, model, objs, batch, params) -> dict:
    """One AdamW step (bf16 states) after a UNO forward + backward."""
    dev = ctx['device']
    if ctx['left']() < 15:
        return dict(status='skipped: time budget')
    try:
        _set_attention(model, dict(type='sdpa'))
        opt = torch.optim.AdamW(params, lr=1e-6, fused=gs.is_cuda(dev))
        step = _train_step(model, objs, batch, params, opt)
        gs.reset_peak(dev)
        times = gs.timed(step, dev, 1, warmup=1)
        out = dict(status='ok', step_with_adamw_s=times[0],
                   peak_gib=gs.peak_gib(dev), states='AdamW, bf16 states')
    except Exception as err:  # noqa: BLE001
        out = dict(status='failed', error=gs.last_line(err),
                   oom=gs.is_oom(err))
    for p in params:
        p.grad = None
    opt = None
    gs.free_memory(dev)
    return out
