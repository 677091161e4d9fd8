"""Images per second of the flow sampler with and without the KV cache.

Builds a randomly initialised :class:`UnoModel` (no checkpoint needed:
the speed does not depend on the weights), then times
:class:`FlowSampler` with ``use_kv_cache`` True and False on the same
prompts and noise, checks that both give the same images, and prints the
throughput of each and the speed-up.

Example:
    python tools/analysis/sampler_speed.py --hidden 256 --layers 4 \\
        --image-size 32 --prompt-len 32 --steps 25
"""
import os.path as osp
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser, run_cli  # noqa: E402

import torch  # noqa: E402

from uno.models.sampling import FlowSampler  # noqa: E402
from uno.registry import MODELS  # noqa: E402

TOKENIZER = SimpleNamespace(bos_id=1, eos_id=2, vision_start_id=4,
                            vision_end_id=5)


def parse_args():
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hidden', type=int, default=256)
    parser.add_argument('--layers', type=int, default=4)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--kv-heads', type=int, default=4)
    parser.add_argument('--vocab', type=int, default=1024)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--patch', type=int, default=4)
    parser.add_argument('--prompt-len', type=int, default=32)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--steps', type=int, default=25)
    parser.add_argument('--cfg-scale', type=float, default=4.0)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (0: torch default)')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args()


def build_model(args):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='UnoModel',
        llm=dict(vocab_size=args.vocab, hidden_size=args.hidden,
                 num_layers=args.layers, num_heads=args.heads,
                 num_kv_heads=args.kv_heads,
                 intermediate_size=4 * args.hidden),
        latent_encoder=dict(type='PixelPatchifier', patch_size=args.patch),
        attention=dict(type='sdpa')))
    torch.nn.init.normal_(model.llm2vae.weight, std=0.02)  # non-zero v
    return model.to(args.device).eval()


def time_samplers(model, samplers, prompts, args):
    """Best wall time of each sampler over ``repeats`` rounds (after one
    warm-up round) and its images. The samplers take turns within a round
    so that a change in machine load affects both alike."""
    best = [float('inf')] * len(samplers)
    images = [None] * len(samplers)
    for i in range(args.repeats + 1):
        for j, sampler in enumerate(samplers):
            gen = torch.Generator(args.device).manual_seed(0)
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            start = time.perf_counter()
            images[j] = sampler.sample(model, prompts, TOKENIZER,
                                       args.image_size, gen)
            if args.device.startswith('cuda'):
                torch.cuda.synchronize()
            if i:  # round 0 warms up allocators and kernels
                best[j] = min(best[j], time.perf_counter() - start)
    return best, images


def main():
    args = parse_args()
    run_cli(lambda: _run(args), debug=False)


def _run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(6, args.vocab, (args.batch, args.prompt_len),
                            generator=g).tolist()
    side = args.image_size // args.patch
    print(f'config: hidden {args.hidden}, {args.layers} layers, '
          f'{args.heads}/{args.kv_heads} heads, {args.image_size}x'
          f'{args.image_size} images = {side * side} latent tokens, '
          f'prompt {args.prompt_len} tokens, batch {args.batch}, '
          f'{args.steps} steps, cfg {args.cfg_scale}, {args.device} '
          f'({torch.get_num_threads()} threads), best of {args.repeats}')
    samplers = [FlowSampler(num_steps=args.steps, cfg_scale=args.cfg_scale,
                            use_kv_cache=cache) for cache in (False, True)]
    seconds, images = time_samplers(model, samplers, prompts, args)
    for name, sec in zip(('uncached', 'cached'), seconds):
        print(f'{name:>9}: {sec:7.3f} s/batch, '
              f'{args.batch / sec:8.2f} images/s')
    diff = (images[1] - images[0]).abs().max().item()
    print(f'speed-up: {seconds[0] / seconds[1]:.2f}x '
          f'(max |cached - uncached| = {diff:.2e})')


if __name__ == '__main__':
    main()
