"""In-process inference parts of tools/analysis/gpu_check.py (5 and 6).

Same contract as :mod:`_gpu_parts`: a part takes the run context and
returns its figures with a one-line ``summary`` and ``problems``.
"""
import time

import torch

import _gpu_setup as gs

BF16 = torch.bfloat16


def part_sampling(ctx) -> dict:
    """Part 5: the KV-cached CFG sampler against recomputing the prompt
    at every step, images/s."""
    from uno.models.sampling import FlowSampler
    dev, s = ctx['device'], ctx['sizes']['sampling']
    model = gs.build_model(gs.model_cfg(s, dict(type='sdpa'), uno=False),
                           dev, BF16).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(6, s['vocab'], (n, ), generator=g).tolist()
               for n in s['prompts']]
    side = s['grid'] * s['patch']
    images = {}

    def run(cache, steps):
        sampler = FlowSampler(num_steps=steps, cfg_scale=4.0,
                              use_kv_cache=cache)

        def go():
            gen = torch.Generator(dev).manual_seed(0)
            images[cache] = sampler.sample(model, prompts, gs.TOKENIZER,
                                           side, gen).float()
        return go

    for cache in (True, False):  # warm-up: 2 steps each
        run(cache, 2)()
    gs.reset_peak(dev)
    times = {}
    for cache in (True, False):
        if ctx['left']() < 5:
            break
        times['cached' if cache else 'uncached'] = min(
            gs.timed(run(cache, s['steps']), dev, s['repeats'], warmup=0))
    rate = {k: len(prompts) / v for k, v in times.items()}
    diff = (float((images[True] - images[False]).abs().max())
            if len(times) == 2 else None)
    speed = (times['uncached'] / times['cached'] if len(times) == 2
             else None)
    floor = _fp32_floor(ctx, model, run, images, s['steps'])
    verdict = ''
    if diff is not None and floor is not None:  # bf16 noise as the scale
        verdict = (f'; cache error {diff:.3g} '
                   f'{"within" if diff <= floor else "ABOVE"} bf16-vs-fp32 '
                   f'{floor:.3g}')
    return dict(summary=f'{rate.get("cached", 0):.2f} images/s cached, '
                f'{rate.get("uncached", 0):.2f} uncached '
                f'({speed or 0:.2f}x){verdict}', images_per_s=rate,
                seconds=times, speedup=speed, max_abs_diff=diff,
                bf16_vs_fp32_max_abs_diff=floor,
                batch=len(prompts), prompt_tokens=s['prompts'],
                latent_tokens=s['grid']**2, steps=s['steps'],
                cfg_scale=4.0, layers=s['layers'],
                peak_gib=gs.peak_gib(dev), problems=[])


def _fp32_floor(ctx, model, run, images, steps: int):
    """Max difference of the uncached bf16 images from the same weights
    in fp32 (TF32 matmuls): the scale against which the cache's own error
    is read (random weights over many layers and CFG amplify rounding).
    None when the budget or memory does not allow it."""
    if ctx['left']() < 25 or False not in images:
        return None
    low = images[False]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        model.float()
        gs.rope_to_fp32(model, model.cfg.rope_theta)
        run(False, steps)()
        return float((images[False] - low).abs().max())
    except Exception:  # noqa: BLE001 (out of memory on a smaller GPU)
        return None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        images[False] = low


# --------------------------------------------------------------------------
def part_encoders(ctx) -> dict:
    """Part 6: the encoders' bf16 forward against their fp32 forward."""
    from uno.models.encoders import (AutoencoderKLEncoder,
                                     SiglipVisionEncoder, TimmViTEncoder)
    dev = ctx['device']
    vit = dict(img_size=32, patch_size=4, embed_dim=64, depth=2,
               num_heads=4)
    siglip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=16, patch_size=4)
    cases = [('timm_vit', lambda: TimmViTEncoder(config=vit), 32, 'fwd'),
             ('siglip', lambda: SiglipVisionEncoder(config=siglip), 16,
              'fwd'),
             ('vae_tiny', lambda: AutoencoderKLEncoder(config='tiny'), 16,
              'vae')]
    if ctx['sizes']['encoders']['bagel_size']:
        big = dict(hidden_size=1152, intermediate_size=4304,
                   num_hidden_layers=27, num_attention_heads=16,
                   patch_size=14, image_size=980)
        cases += [('siglip_bagel', lambda: SiglipVisionEncoder(
            config=big, select_layer=-2, from_bagel=True), 448, 'fwd'),
                  ('vae_flux', lambda: AutoencoderKLEncoder(
                      config='flux', patch_size=2), 256, 'vae')]
    results, problems = {}, []
    for name, build, size, kind in cases:
        try:
            results[name] = _encoder(build, size, kind, dev)
        except Exception as err:  # noqa: BLE001
            results[name] = dict(status='failed', error=gs.last_line(err))
        if results[name]['status'] == 'failed':
            problems.append(f'{name}: {results[name]["error"]}')
        gs.free_memory(dev)
    ok = [k for k, v in results.items() if v.get('status') == 'ok']
    return dict(summary=f'{len(ok)}/{len(results)} bf16 forwards ok',
                encoders=results, problems=problems)


def _encoder(build, size, kind, dev) -> dict:
    torch.manual_seed(0)
    with torch.device(dev):
        enc = build().eval()
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, size, size, generator=g) * 2 - 1).to(dev)

    def fwd(e, x):
        if kind == 'vae':
            tokens = e.encode(x)
            side = size // e.stride
            return tokens, e.decode(tokens, (side, side))
        return e(x), None

    with torch.no_grad():
        ref, ref_img = fwd(enc, images)
        enc = enc.to(BF16)
        start = time.perf_counter()
        out, img = fwd(enc, images.to(BF16))
        gs.sync(dev)
    r = dict(status='ok', shape=list(out.shape), dtype=str(out.dtype),
             seconds=time.perf_counter() - start,
             rel_err_vs_fp32=gs.rel_err(out, ref),
             finite=bool(torch.isfinite(out).all()))
    if img is not None:
        r['decode_rel_err_vs_fp32'] = gs.rel_err(img, ref_img)
    if not r['finite'] or r['rel_err_vs_fp32'] > 5e-2:
        r['status'] = 'failed'
        r['error'] = (f'bf16 output off: finite={r["finite"]}, rel err '
                      f'{r["rel_err_vs_fp32"]:.2e}')
    return r
