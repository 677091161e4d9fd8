"""Draw a training sequence and its attention mask, from the code itself.

The figure is made from a real :class:`~uno.structures.SequencePlan` built
by the project's datasets and plan builders (``t2i_plan``, ``edit_plan``,
``uno_segments``), packed by :func:`~uno.datasets.pack_sequences`, with the
mask of :meth:`PackedBatch.dense_mask` (the rule every attention backend
applies). Nothing in the picture is drawn by hand:

(a) the token strip, coloured by segment kind, with the expert of every
    token (und / gen) and, per segment, what it sees and which loss it
    feeds;
(b) the attention mask, query rows x key columns, segment boundaries drawn
    and the blocks removed by prompt masking (an explicit ``sees``) outlined.

Examples::

    python tools/misc/plot_sequence.py uno --out docs/figures/uno_sequence.png
    python tools/misc/plot_sequence.py uno-edit \\
        --out docs/figures/uno_edit_sequence.png
    python tools/misc/plot_sequence.py \\
        configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py --out /tmp/seq.png \\
        --cfg-options objectives.caption.weight=0 model.metaquery.num_queries=4

A config gives its training dataset, with the UNO plan options derived
from its objectives exactly as ``build_runner`` derives them; images are
re-rendered at ``--image-size`` and prompt dropout is turned off so the
sequence stays short and readable.
"""
import argparse
import copy
import os.path as osp
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

try:
    import uno  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0,
                    osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from uno.structures.packing import pack_sequences  # noqa: E402

TASKS = ('t2i', 'uno', 'edit', 'uno-edit')
KIND_COLORS = {
    'text': '#7aa6d8',
    'caption': '#f0a04b',
    'vit': '#9b7fd1',
    'clean_latent': '#8cc084',
    'noisy_latent': '#3f8f4f',
    'metaquery': '#d9667a',
}
EXPERT_COLORS = {'und': '#4a6fa5', 'gen': '#2e7d32'}
LOSS_OF_KIND = {
    'noisy_latent': 'flow matching\n(velocity MSE)',
    'caption': 'captioning CE',
    'text': 'CE',
    'metaquery': 'visual regression',
}
TOKENIZER = dict(type='WordTokenizer', vocab_size=128)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Draw a packed training sequence and its attention '
        'mask.')
    parser.add_argument(
        'source', nargs='?', default=None, metavar='CONFIG_OR_TASK',
        help=f'a config file, or a task: {", ".join(TASKS)}')
    parser.add_argument('--task', choices=TASKS,
                        help='the task (instead of CONFIG_OR_TASK)')
    parser.add_argument('--out', required=True, help='output PNG path')
    parser.add_argument('--index', type=int, default=0,
                        help='dataset index of the first sample')
    parser.add_argument('--samples', type=int, default=1,
                        help='samples packed into the sequence')
    parser.add_argument('--image-size', type=int, default=16,
                        help='render size (small keeps the figure legible)')
    parser.add_argument('--latent-stride', type=int, default=8)
    parser.add_argument('--vit-stride', type=int, default=8)
    parser.add_argument('--num-queries', type=int, default=4,
                        help='metaqueries of the uno tasks')
    parser.add_argument('--dpi', type=int, default=110)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override keys of CONFIG, e.g. objectives.caption.weight=0')
    args = parser.parse_args()
    if args.source is not None and args.task is not None:
        parser.error('give CONFIG_OR_TASK or --task, not both')
    args.source = args.source or args.task or 'uno'
    if args.source not in TASKS and not osp.isfile(args.source):
        parser.error(f'{args.source!r} is neither a task ({", ".join(TASKS)})'
                     ' nor a config file')
    if args.cfg_options and args.source in TASKS:
        parser.error('--cfg-options needs a config file')
    return args


# --------------------------------------------------------------------------
# building the sequence
def dataset_for_task(task: str, image_size: int, num_queries: int):
    """The ShapesWorld dataset whose plans show ``task``."""
    from uno.datasets import ShapesWorldEditDataset, ShapesWorldT2IDataset
    options = dict(caption=True, num_queries=num_queries) \
        if task.startswith('uno') else None
    if task in ('t2i', 'uno'):
        return ShapesWorldT2IDataset(image_size=image_size,
                                     prompt_dropout=0.0, tokenizer=TOKENIZER,
                                     uno=options)
    return ShapesWorldEditDataset(image_size=image_size,
                                  instruction_dropout=0.0,
                                  tokenizer=TOKENIZER, uno=options)


def dataset_for_config(path: str, image_size: int, options=None):
    """The config's training dataset, with the plan options that
    ``build_runner`` derives from its objectives."""
    from mmengine.config import Config

    from uno.datasets.builder import inject_plan_options
    from uno.engine.runner import plan_options
    from uno.registry import DATASETS
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    dataset = copy.deepcopy(cfg.train_dataloader.dataset)
    inject_plan_options(dataset, plan_options(cfg), 'train_dataloader')
    _shrink(dataset, image_size)
    return DATASETS.build(dataset)


def _shrink(cfg, image_size: int) -> None:
    """Small images and no prompt dropout, in every nested dataset."""
    if isinstance(cfg, dict):
        for key in ('image_size', ):
            if key in cfg:
                cfg[key] = image_size
        for key in ('prompt_dropout', 'instruction_dropout'):
            if key in cfg:
                cfg[key] = 0.0
        for value in cfg.values():
            _shrink(value, image_size)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _shrink(value, image_size)


def segment_names(plan) -> list:
    """A readable name for every segment of ``plan``."""
    kinds = plan.kinds()
    editing = 'clean_latent' in kinds and 'noisy_latent' in kinds
    names = []
    for i, seg in enumerate(plan.segments):
        later_noisy = 'noisy_latent' in kinds[i + 1:]
        if seg.kind == 'text':
            name = ('instruction' if editing else 'prompt') \
                if later_noisy else 'text'
        elif seg.kind == 'caption':
            name = 'caption'
        elif seg.kind == 'vit':
            name = 'source ViT' if editing else 'ViT image'
        elif seg.kind == 'clean_latent':
            name = 'source latents' if editing else 'clean latents'
        elif seg.kind == 'noisy_latent':
            name = 'noisy target' if editing else 'noisy image'
        else:
            name = f'{seg.num_queries} metaqueries'
        names.append(name)
    return names


# --------------------------------------------------------------------------
# drawing
def token_labels(batch, tokenizer) -> list:
    """A short label for every token of the packed sequence."""
    labels = [''] * batch.num_tokens
    vocab = tokenizer.tokens
    for i in batch.text_index.tolist():
        word = vocab[int(batch.input_ids[i])]
        word = {'<vision_start>': '<vs>', '<vision_end>': '<ve>'}.get(
            word, word)
        labels[i] = word
    for key, char in (('noisy', 'x_t'), ('clean', 'x_0'), ('vit', 'v')):
        for i in getattr(batch, f'{key}_index').tolist():
            labels[i] = char
    for i, slot in zip(batch.query_index.tolist(),
                       batch.query_slot.tolist()):
        labels[i] = f'q{slot + 1}'
    return labels


def describe_segments(plans, batch):
    """Per packed segment: (start, end, kind, name, sample, plan index,
    visible earlier segment indices, loss)."""
    rows, g = [], 0
    seg_ids = batch.segment_ids.tolist()
    for b, plan in enumerate(plans):
        names = segment_names(plan)
        vis = plan.visible()
        for s, seg in enumerate(plan.segments):
            positions = [i for i, v in enumerate(seg_ids) if v == g]
            sees = [k for k in range(s) if vis[s][k]]
            name = names[s] if len(plans) == 1 else f'{names[s]} (s{b})'
            rows.append(dict(start=positions[0], end=positions[-1] + 1,
                             kind=seg.kind, name=name, sample=b,
                             index=s, sees=sees, loss=seg.loss,
                             attn=seg.attn, explicit=seg.sees is not None))
            g += 1
    return rows


def segment_caption(row, gen_experts) -> str:
    """The text under a segment of the strip."""
    expert = '/'.join(gen_experts)
    sees = ('sees ' + ','.join(str(k) for k in row['sees'])
            if row['sees'] else 'sees nothing before it')
    loss = LOSS_OF_KIND.get(row['kind']) if row['loss'] else None
    if row['kind'] == 'text' and not row['loss']:
        loss = 'no loss'
    lines = [f"[{row['index']}] {row['name']}", f"{expert}, {row['attn']}",
             sees, loss or 'no loss']
    return '\n'.join(lines)


def draw(plans, batch, tokenizer, title: str, out: str, dpi: int) -> None:
    mask = batch.dense_mask().numpy()  # (L, L)
    length = batch.num_tokens
    rows = describe_segments(plans, batch)
    gen = set(batch.gen_index.tolist())
    labels = token_labels(batch, tokenizer)
    cell = max(0.32, 8.0 / length)  # inches per token
    # layout in inches: title, strip, gap for the mask's top labels, mask
    left, right, title_h, strip_h, gap, bottom = 1.6, 2.9, 0.6, 2.5, 1.0, 0.5
    width = left + length * cell + right
    height = title_h + strip_h + gap + length * cell + bottom
    fig = plt.figure(figsize=(width, height), dpi=dpi)

    def box(x, y, w, h):  # inches from the top-left -> figure fraction
        return [x / width, 1 - (y + h) / height, w / width, h / height]

    ax_s = fig.add_axes(box(left, title_h, length * cell, strip_h))
    ax_m = fig.add_axes(box(left, title_h + strip_h + gap, length * cell,
                            length * cell))
    fig.suptitle(title, fontsize=13, y=1 - 0.15 / height, va='top')

    # (a) token strip: kind row (y 2..3.4) and expert row (y 1.2..1.8)
    ax_s.set_xlim(0, length)
    ax_s.set_ylim(-0.9, 3.7)
    ax_s.axis('off')
    for row in rows:
        color = KIND_COLORS[row['kind']]
        for i in range(row['start'], row['end']):
            ax_s.add_patch(Rectangle((i, 2), 1, 1.4, facecolor=color,
                                     edgecolor='white', lw=0.8))
            ax_s.text(i + 0.5, 2.7, labels[i], rotation=90, ha='center',
                      va='center', fontsize=7.5)
            expert = 'gen' if i in gen else 'und'
            ax_s.add_patch(Rectangle((i, 1.2), 1, 0.6,
                                     facecolor=EXPERT_COLORS[expert],
                                     edgecolor='white', lw=0.8))
            ax_s.text(i + 0.5, 1.5, expert, ha='center', va='center',
                      fontsize=6, color='white')
        experts = sorted({'gen' if i in gen else 'und'
                          for i in range(row['start'], row['end'])})
        if len(experts) == 2:
            experts = ['gen (markers und)']
        mid = (row['start'] + row['end']) / 2
        ax_s.plot([row['start'] + 0.1, row['end'] - 0.1], [0.95, 0.95],
                  color='black', lw=1.2)
        ax_s.text(mid, 0.8, segment_caption(row, experts), ha='center',
                  va='top', fontsize=8)
    ax_s.text(-0.3, 2.7, 'tokens', ha='right', va='center', fontsize=9)
    ax_s.text(-0.3, 1.5, 'expert', ha='right', va='center', fontsize=9)
    ax_s.text(0, 3.6, '(a) packed sequence: segment kind and expert of '
              'every token; per segment: attention, the segments it sees, '
              'its loss', fontsize=10, va='bottom')

    # (b) mask: allowed cells in the key segment's colour, blocked white
    key_color = [None] * length
    for row in rows:
        rgb = matplotlib.colors.to_rgb(KIND_COLORS[row['kind']])
        for i in range(row['start'], row['end']):
            key_color[i] = rgb
    image = [[key_color[k] if mask[q, k] else (1, 1, 1)
              for k in range(length)] for q in range(length)]
    ax_m.imshow(image, interpolation='nearest', aspect='equal',
                extent=(0, length, length, 0))
    for edge in [r['start'] for r in rows] + [length]:
        ax_m.axhline(edge, color='#555555', lw=0.7)
        ax_m.axvline(edge, color='#555555', lw=0.7)
    # blocks an explicit `sees` removed: the condition (prompt masking)
    # in red, other earlier segments (e.g. the caption for metaqueries
    # without see_caption) in grey
    for qrow in rows:
        if not qrow['explicit']:
            continue
        for krow in rows:
            if (krow['sample'] != qrow['sample']
                    or krow['index'] >= qrow['index']
                    or krow['index'] in qrow['sees']):
                continue
            condition = krow['kind'] in ('text', 'vit', 'clean_latent')
            color = '#c62828' if condition else '#888888'
            x, y = krow['start'], qrow['start']
            w, h = krow['end'] - x, qrow['end'] - y
            ax_m.add_patch(Rectangle((x, y), w, h, fill=False,
                                     edgecolor=color, lw=1.5, ls='--',
                                     hatch='//' if condition else '..'))
            text = 'prompt\nmasked' if condition else 'not in\nsees'
            ax_m.text(x + w / 2, y + h / 2, text, ha='center', va='center',
                      fontsize=7.5, color=color, fontweight='bold',
                      bbox=dict(facecolor='white', edgecolor='none',
                                alpha=0.85, pad=1))
    ticks = [(r['start'] + r['end']) / 2 for r in rows]
    names = [f"[{r['index']}] {r['name']}" for r in rows]
    ax_m.xaxis.tick_top()
    ax_m.set_xticks(ticks)
    ax_m.set_xticklabels(names, rotation=30, ha='left', fontsize=8)
    ax_m.set_yticks(ticks)
    ax_m.set_yticklabels(names, fontsize=8)
    ax_m.set_xlabel('keys (attended to)', fontsize=9)
    ax_m.set_ylabel('queries (attending)', fontsize=9)
    ax_m.tick_params(length=0)
    for side in ax_m.spines.values():
        side.set_visible(False)
    kinds = {r['kind'] for r in rows}
    legend = [Patch(facecolor=c, label=k) for k, c in KIND_COLORS.items()
              if k in kinds]
    legend += [Patch(facecolor=c, label=f'{e} expert')
               for e, c in EXPERT_COLORS.items()]
    legend.append(Patch(facecolor='white', edgecolor='#999999',
                        label='blocked'))
    if any(r['explicit'] for r in rows):
        legend += [
            Patch(facecolor='white', edgecolor='#c62828', hatch='//',
                  ls='--', label='prompt masking\n(condition not in sees)'),
            Patch(facecolor='white', edgecolor='#888888', hatch='..',
                  ls='--', label='other segment\nnot in sees')]
    ax_m.legend(handles=legend, loc='upper left', bbox_to_anchor=(1.02, 1),
                fontsize=8, frameon=False, title_fontsize=9,
                title='(b) attention mask\nrow (query) may attend\n'
                'column (key) where\ncoloured by the key kind')
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def main():
    args = parse_args()
    if args.source in TASKS:
        dataset = dataset_for_task(args.source, args.image_size,
                                   args.num_queries)
        title = {
            't2i': 'Text-to-image (flow only): BAGEL plan',
            'uno': 'UNO text-to-image: prompt, noisy image, caption, '
                   'metaqueries',
            'edit': 'Editing (flow only): BAGEL plan',
            'uno-edit': 'UNO editing: caption and metaqueries of the '
                        'noisy target',
        }[args.source]
    else:
        dataset = dataset_for_config(args.source, args.image_size,
                                     args.cfg_options)
        title = osp.basename(args.source)
    plans = [dataset[args.index + i] for i in range(args.samples)]
    plans = [p for p in plans if p is not None]
    batch = pack_sequences(plans, latent_stride=args.latent_stride,
                           vit_stride=args.vit_stride)
    title += (f'  ({batch.num_tokens} tokens, {args.image_size}px images, '
              f'latent/ViT stride {args.latent_stride}/{args.vit_stride})')
    draw(plans, batch, dataset.tokenizer if hasattr(dataset, 'tokenizer')
         else _first_tokenizer(dataset), title, args.out, args.dpi)
    print(f'saved {args.out}: {batch.num_tokens} tokens, segments '
          f"{' | '.join(plans[0].kinds())}")


def _first_tokenizer(dataset):
    """The tokenizer of a mixture's first source."""
    for inner in getattr(dataset, 'datasets', {}).values():
        if hasattr(inner, 'tokenizer'):
            return inner.tokenizer
    raise ValueError('cannot find the tokenizer of the dataset')


if __name__ == '__main__':
    main()
