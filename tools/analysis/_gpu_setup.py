"""Sizes, builders and meters of tools/analysis/gpu_check.py.

Not part of the package: the GPU check's helpers. Every model is a
randomly initialised :class:`UnoModel` (numerics and speed do not depend
on trained weights) built directly on the target device and dtype, and
every batch is packed from synthetic UNO plans (prompt, noisy latents,
caption, metaqueries) with :func:`uno.datasets.pack_sequences`, the
training packer.
"""
import contextlib
import time
from typing import Dict, List, Optional

import torch

BOS, EOS, VS, VE = 1, 2, 4, 5  # WordTokenizer's special ids
TOKENIZER = type('Specials', (), dict(bos_id=BOS, eos_id=EOS,
                                      vision_start_id=VS,
                                      vision_end_id=VE))()

#: BAGEL-7B-MoT's layer (configs/_base_/models/bagel-7b-mot.py), per expert
BAGEL_LAYER = dict(hidden_size=3584, num_heads=28, num_kv_heads=4,
                   intermediate_size=18944, rope_theta=1e6,
                   rms_norm_eps=1e-6, qkv_bias=True, qk_norm=True)
TOY_LAYER = dict(BAGEL_LAYER, hidden_size=64, num_heads=4, num_kv_heads=2,
                 intermediate_size=128)
#: datasheet dense bf16 tensor-core peaks (TFLOP/s), first match wins
DATASHEET_BF16 = (('H100 PCIe', 756.0), ('H100 NVL', 835.0),
                  ('H200', 989.0), ('H100', 989.0), ('A100', 312.0),
                  ('L40S', 362.0))
UNO_FREEZE = dict(und=True, embed_tokens=True, lm_head=True,
                  und_encoder=True, connector=True, latent_encoder=True)
UNO_OBJECTIVES = dict(
    flow=dict(type='FlowMatchingObjective'),
    caption=dict(type='CaptioningObjective'),
    regression=dict(type='VisualRegressionObjective', weight=0.5,
                    loss='cosine', resample='pool'))
SFT_OBJECTIVES = dict(flow=dict(type='FlowMatchingObjective'))


def sizes(dry: bool, scale: float = 1.0) -> Dict[str, dict]:
    """Sizes of every part: BAGEL-like on a GPU, toy in a dry run.

    ``scale`` (GPU only) multiplies the depth of the full-depth parts
    (3 and 5) and the number of samples of part 3, for GPUs with less
    memory; latent tokens per image stay 1,024.

    Args:
        dry (bool): Toy sizes for the CPU.
        scale (float): Size factor. Defaults to 1.0.

    Returns:
        dict: ``correctness``, ``throughput``, ``sampling``, ``encoders``
        and ``gemm`` settings.
    """
    if dry:
        vit = dict(img_size=16, patch_size=4, embed_dim=32, depth=1,
                   num_heads=2)
        return dict(
            correctness=dict(layer=TOY_LAYER, layers=2, vocab=256, grid=4,
                             patch=4, prompts=[6, 10, 4],
                             captions=[5, 7, 3], queries=4),
            throughput=dict(layer=TOY_LAYER, layers=2, vocab=256, grid=4,
                            patch=4, prompts=[8, 12], captions=[5, 6],
                            queries=4, vit=vit, repeats=1),
            sampling=dict(layer=TOY_LAYER, layers=2, vocab=256, grid=4,
                          patch=4, prompts=[6, 12], steps=3, repeats=1),
            encoders=dict(bagel_size=False), gemm=256)
    depth = max(2, round(28 * scale))
    samples = max(1, round(4 * scale))
    # a SigLIP-so400m-like timm ViT at patch 14: 448 px = 32 x 32 tokens,
    # the same grid as the 1,024 latent tokens (PixelPatchifier, patch 14)
    vit = dict(img_size=448, patch_size=14, embed_dim=1152, depth=26,
               num_heads=16, mlp_ratio=4304 / 1152)
    return dict(
        correctness=dict(layer=BAGEL_LAYER, layers=2, vocab=4096, grid=16,
                         patch=14, prompts=[40, 64, 24],
                         captions=[16, 24, 12], queries=16),
        throughput=dict(layer=BAGEL_LAYER, layers=depth, vocab=152064,
                        grid=32, patch=14,
                        prompts=[64, 128, 96, 200][:samples],
                        captions=[32, 48, 24, 40][:samples], queries=16,
                        vit=vit, repeats=3),
        sampling=dict(layer=BAGEL_LAYER, layers=depth, vocab=152064,
                      grid=32, patch=14, prompts=[64, 128, 192, 256],
                      steps=25, repeats=1),
        encoders=dict(bagel_size=True), gemm=8192)


# --------------------------------------------------------------------------
@contextlib.contextmanager
def build_on(device, dtype: torch.dtype):
    """Create parameters directly on ``device`` in ``dtype`` (no fp32 copy
    of a 15B-parameter model on the host)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def rope_to_fp32(model: torch.nn.Module, theta: float) -> None:
    """Recompute RoPE's inverse frequencies in fp32 after a dtype cast
    (``model.to(bf16)`` casts that buffer too: off by up to 2**-9
    relative, a phase error of radians at positions in the thousands)."""
    from uno.models.mot import RotaryEmbedding
    for m in model.modules():
        if isinstance(m, RotaryEmbedding):
            dim = m.inv_freq.numel() * 2
            half = torch.arange(0, dim, 2, device=m.inv_freq.device)
            m.inv_freq = 1.0 / (theta**(half.float() / dim))


def model_cfg(s: dict, attention: dict, uno: bool = True,
              vit: Optional[dict] = None) -> dict:
    """UnoModel config of a size entry (:func:`sizes`)."""
    cfg = dict(type='UnoModel',
               llm=dict(s['layer'], vocab_size=s['vocab'],
                        num_layers=s['layers']),
               latent_encoder=dict(type='PixelPatchifier',
                                   patch_size=s['patch']),
               attention=attention,
               metaquery=dict(num_queries=s.get('queries', 0) if uno else 0))
    if vit is not None:
        cfg.update(und_encoder=dict(type='TimmViTEncoder', config=dict(vit)),
                   freeze=UNO_FREEZE)
    return cfg


def build_model(cfg: dict, device, dtype: torch.dtype):
    """A random UnoModel on ``device`` in ``dtype``, non-zero velocity
    head, RoPE frequencies in fp32."""
    from uno.registry import MODELS
    torch.manual_seed(0)
    with build_on(device, dtype):
        model = MODELS.build(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.llm2vae.weight, std=0.02)
    rope_to_fp32(model, cfg['llm'].get('rope_theta', 10000.0))
    return model


def uno_plans(s: dict, uno: bool = True, seed: int = 0,
              prompt_shift: int = 0) -> list:
    """Text-to-image plans of the size entry: a prompt, a noisy image of
    ``grid x grid`` latent tokens and, with ``uno``, a caption and
    ``queries`` metaqueries that see the noisy image only.

    ``prompt_shift`` changes every prompt id (same lengths): the batch for
    the prompt-masking check.
    """
    from uno.structures.plans import UnoPlanOptions, t2i_plan, uno_segments
    from uno.structures import SequencePlan
    g = torch.Generator().manual_seed(seed)
    side, vocab = s['grid'] * s['patch'], s['vocab']
    opts = UnoPlanOptions(caption=True, num_queries=s.get('queries', 0))
    plans = []
    for i, n in enumerate(s['prompts']):
        ids = torch.randint(6, vocab, (n, ), generator=g)
        ids = ((ids - 6 + prompt_shift) % (vocab - 6) + 6).tolist()
        segments = t2i_plan(ids, TOKENIZER)
        if uno:
            cap = torch.randint(6, vocab, (s['captions'][i], ), generator=g)
            segments += uno_segments(1, cap.tolist(), TOKENIZER, opts, 0,
                                     len(segments))
        image = torch.rand(3, side, side, generator=g) * 2 - 1
        plans.append(SequencePlan(segments, images=[image],
                                  meta=dict(index=i)))
    return plans


def pack(s: dict, plans: list, device, vit_stride: int = 0):
    from uno.datasets import pack_sequences
    return pack_sequences(plans, latent_stride=s['patch'],
                          vit_stride=vit_stride).to(device)


# --------------------------------------------------------------------------
def is_cuda(device) -> bool:
    return torch.device(device).type == 'cuda'


def sync(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def top_kernels(step, device, n: int = 15) -> dict:
    """One call of ``step`` under ``torch.profiler`` after a warm-up: the
    ``n`` CUDA kernels (CPU ops without CUDA) with the most self time and
    their share of it all, to show where a step's time goes."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = is_cuda(device)
    step()
    with profile(activities=[ProfilerActivity.CPU] +
                 [ProfilerActivity.CUDA] * cuda) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    # on CUDA the kernels only: an aten op's self device time would count
    # its kernels a second time
    kind = DeviceType.CUDA if cuda else DeviceType.CPU
    attr = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    rows = sorted(((getattr(e, attr, 0), e) for e in prof.key_averages()
                   if e.device_type == kind),
                  key=lambda r: r[0], reverse=True)
    total = sum(t for t, _ in rows) or 1.0
    return dict(kind='CUDA kernels' if cuda else 'CPU ops',
                total_ms=total / 1e3,
                top=[dict(name=e.key[:90], ms=t / 1e3, share=t / total,
                          calls=e.count) for t, e in rows[:n] if t > 0])


def timed(fn, device, repeats: int, warmup: int = 1) -> List[float]:
    """Wall times of ``repeats`` calls after ``warmup`` calls."""
    times = []
    for r in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if r >= warmup:
            times.append(time.perf_counter() - start)
    return times


def reset_peak(device) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> Optional[float]:
    """Peak allocated GiB since :func:`reset_peak` (None on the CPU)."""
    if is_cuda(device):
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def free_memory(device) -> None:
    import gc
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        'out of memory' in str(err).lower())


def gemm_peak(device, n: int, dtype: torch.dtype) -> dict:
    """Best FLOP/s of an ``n^3`` matmul (10 timed after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = timed(lambda: a @ b, device, 10, warmup=3)
    return dict(size=n, dtype=str(dtype), best_s=min(times),
                tflops=2 * n**3 / min(times) / 1e12)


def datasheet_tflops(name: Optional[str]) -> Optional[float]:
    """Dense bf16 datasheet peak of a GPU by its name (None: unknown)."""
    for key, value in DATASHEET_BF16:
        if name and key in name:
            return value
    return None


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ``||a - b|| / ||b||`` in fp32."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def last_line(err: BaseException) -> str:
    """``Type: message``, the message cut to its last non-empty line."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return f'{type(err).__name__}: {lines[-1] if lines else ""}'[:400]
