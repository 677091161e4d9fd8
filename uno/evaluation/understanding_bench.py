"""ShapesWorld understanding benchmark: captions parsed back to scenes.

A caption produced by the understanding path is parsed into object phrases
(count, size, colour, shape) and an optional spatial relation, by a small
left-to-right reader that knows every phrasing of
:mod:`uno.datasets.shapesworld.captions` (article and number phrases,
"a single circle coloured red", "there are ...", "a picture with three
shapes, ...", relations in short, long and inverted form) and tolerates
broken text (unknown words, missing attributes, repeated nouns). The
parse is matched to the scene's objects to give attribute accuracies, an
object F1 and an exact-match flag; with token NLLs the metric also reports
perplexity, so UNO's effect on understanding can be measured.
"""
import math
import re
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric

from uno.datasets.shapesworld import COLORS, SHAPES, SIZES, Scene
from uno.registry import EVALUATORS
from .stats import add_intervals

_COUNTS = {'a': 1, 'an': 1, 'one': 1, 'single': 1, 'the': None}
_COUNTS.update(two=2, three=3, four=4)
_NOUNS = {s: (s, False) for s in SHAPES}
_NOUNS.update({s + 's': (s, True) for s in SHAPES})
# words that end a noun phrase without being part of one
_BREAKS = {
    'and', ',', '.', 'shape', 'shapes', 'photo', 'image', 'picture',
    'background', 'with', 'showing', 'on'
}
_INVERSE = {
    'left of': 'right of',
    'right of': 'left of',
    'above': 'below',
    'below': 'above'
}
_MAX_COUNT = 8  # a broken "nine hundred circles" cannot blow up matching
_TOKEN_RE = re.compile(r'[a-z]+|[.,]')


class Phrase(NamedTuple):
    """One parsed noun phrase: ``count`` objects of a description."""
    count: int
    size: Optional[str]
    color: Optional[str]
    shape: str


Relation = Tuple[int, str, int]  # (phrase index, relation, phrase index)


def _parse(text: str) -> Tuple[List[Phrase], Optional[Relation]]:
    tokens = _TOKEN_RE.findall(text.lower())
    phrases: List[Phrase] = []
    relation, pending_rel = None, None
    count, size, color = None, None, None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ''
        if tok in _COUNTS:  # an article or number starts a new phrase
            count, size, color = _COUNTS[tok], None, None
        elif tok in SIZES:
            size = tok
        elif tok in COLORS:
            color = tok
        elif tok in _NOUNS:
            shape, plural = _NOUNS[tok]
            bare = count is None and size is None and color is None
            if bare and i and tokens[i - 1] == tok:  # a repeated noun
                i += 1
                continue
            if count is None:
                count = 2 if plural else 1
            if nxt == 'coloured' and i + 2 < len(tokens) \
                    and tokens[i + 2] in COLORS:
                color = tokens[i + 2]
                i += 2
            phrases.append(Phrase(count, size, color, shape))
            if pending_rel is not None:
                relation = (pending_rel[0], pending_rel[1], len(phrases) - 1)
                pending_rel = None
            count, size, color = None, None, None
        elif tok in ('left', 'right', 'above', 'below'):
            rel = f'{tok} of' if tok in ('left', 'right') else tok
            if nxt == 'of' and tok in ('left', 'right'):
                i += 1
            if phrases and relation is None:
                pending_rel = (len(phrases) - 1, rel)
            count, size, color = None, None, None
        elif tok in _BREAKS:
            count, size, color = None, None, None
        i += 1
    return phrases, relation


def parse_caption(text: str) -> List[Phrase]:
    """Object phrases of a caption, prompt or generated text.

    Example:
        >>> parse_caption('there are two small red circles and a large '
        ...               'blue square on a light background.')
        [Phrase(count=2, size='small', color='red', shape='circle'),
         Phrase(count=1, size='large', color='blue', shape='square')]

    Args:
        text (str): The text; case and punctuation are free.

    Returns:
        list[Phrase]: In order of mention; attributes a phrase leaves out
        are None.
    """
    return _parse(text)[0]


def parse_relation(text: str) -> Optional[Tuple[Phrase, str, Phrase]]:
    """The first stated relation ``(A, relation, B)``, e.g. from
    ``'a red circle left of a blue square'``; None if there is none."""
    phrases, relation = _parse(text)
    if relation is None:
        return None
    return phrases[relation[0]], relation[1], phrases[relation[2]]


def score_caption(text: str,
                  scene: Scene,
                  with_size: Optional[bool] = None) -> Dict[str, float]:
    """Compare a caption with the scene it should describe.

    Parsed objects (each phrase repeated ``count`` times) are matched
    one-to-one to the scene's objects, preferring equal shape, then colour,
    then size (Hungarian matching).

    Args:
        text (str): The caption.
        scene (Scene): The scene.
        with_size (bool, optional): True requires sizes, False ignores
            them, None checks the sizes the caption states. Defaults to
            None.

    Returns:
        dict: ``objects_f1`` (F1 of fully correct objects), ``color_acc``
        and ``shape_acc`` (fraction of scene objects matched to a parsed
        object of the right colour / shape), ``count_acc`` (fraction of
        shapes, in the scene or the caption, whose stated count is right),
        ``relation_acc`` (1/0 for scenes with a relation, else None),
        ``exact`` (every object right, nothing extra, relation right),
        ``size_acc`` (fraction of scene objects matched to a parsed object
        that *states* the object's size; an unstated size counts as wrong;
        None when ``with_size`` is False) and ``object_count_acc`` (1/0:
        the caption states as many objects as the scene has, whatever
        their shapes).

    ``count_acc`` compares counts per shape word, so it also drops when
    only the shape is wrong ("three red circles" for three red squares
    scores 0 on both shapes); ``object_count_acc`` is the shape-independent
    count.
    """
    phrases, relation = _parse(text)
    parsed = [(k, p) for k, p in enumerate(phrases)
              for _ in range(min(p.count, _MAX_COUNT))]
    objs = scene.objects

    def size_ok(p: Phrase, obj) -> bool:
        if with_size is False or (with_size is None and p.size is None):
            return True
        return p.size == obj.size

    n_p, n_s = len(parsed), len(objs)
    eq = np.zeros((3, n_p, n_s), dtype=bool)  # shape, colour, size
    for i, (_, p) in enumerate(parsed):
        for j, obj in enumerate(objs):
            eq[:, i, j] = (p.shape == obj.shape, p.color == obj.color,
                           size_ok(p, obj))
    # scipy when first used (~0.5 s less per tool process)
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(-(4 * eq[0] + 2 * eq[1] + eq[2]))
    shape_hits = eq[0, rows, cols]
    color_hits = eq[1, rows, cols]
    size_hits = sum(parsed[i][1].size == objs[j].size
                    for i, j in zip(rows, cols))
    full = eq[:, rows, cols].all(0)
    tp = int(full.sum())
    true_counts = Counter(o.shape for o in objs)
    said_counts = Counter()
    for p in phrases:
        said_counts[p.shape] += p.count
    shapes = set(true_counts) | set(said_counts)
    rel_acc = None
    if scene.relation is not None:
        rel_acc = 0.0
        # ``full`` is indexed by assignment, not by parsed object: with
        # more parsed objects than scene objects ``rows`` skips some
        obj_of = {parsed[i][0]: j
                  for i, j, ok in zip(rows, cols, full) if ok}
        if relation is not None and {relation[0], relation[2]} <= set(obj_of):
            a, rel, b = obj_of[relation[0]], relation[1], obj_of[relation[2]]
            if (a, b) == (0, 1):
                rel_acc = float(rel == scene.relation)
            elif (a, b) == (1, 0):
                rel_acc = float(rel == _INVERSE[scene.relation])
    return dict(
        objects_f1=2 * tp / (n_p + n_s) if n_p + n_s else 1.0,
        color_acc=float(color_hits.sum()) / n_s if n_s else 1.0,
        shape_acc=float(shape_hits.sum()) / n_s if n_s else 1.0,
        count_acc=float(
            np.mean([said_counts[s] == true_counts[s]
                     for s in shapes])) if shapes else 1.0,
        relation_acc=rel_acc,
        exact=float(tp == n_s == n_p and rel_acc in (None, 1.0)),
        size_acc=None if with_size is False else
        (float(size_hits) / n_s if n_s else 1.0),
        object_count_acc=float(n_p == n_s))


@EVALUATORS.register_module()
class UnderstandingMetric(BaseMetric):
    """Caption accuracy of the understanding path.

    Each data sample is a dict with ``caption`` (generated text) and
    ``scene`` (the :class:`Scene` shown), optionally ``nll`` (summed
    negative log-likelihood, in nats, of the reference caption's
    ``num_tokens`` tokens; without ``num_tokens`` it is a per-token mean).
    Reports ``understanding/attr_acc`` (mean of colour, shape and count
    accuracy), ``exact``, ``objects_f1``, ``color_acc``, ``shape_acc``,
    ``count_acc``, ``relation_acc`` (over scenes with a relation),
    ``size_acc`` (unless ``with_size`` is False), ``object_count_acc`` (see
    :func:`score_caption`) and ``perplexity`` (``exp`` of the token-mean
    NLL) when NLLs are given.

    Args:
        with_size (bool, optional): See :func:`score_caption`. Defaults to
            None.
        prefix (str): Metric name prefix. Defaults to 'understanding'.
    """
    default_prefix = 'understanding'

    def __init__(self,
                 with_size: Optional[bool] = None,
                 prefix: Optional[str] = 'understanding',
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.with_size = with_size

    #: benchmark samples of other tasks are ignored
    task = 'caption'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('task', self.task) != self.task:
                continue
            res = score_caption(sample['caption'], sample['scene'],
                                self.with_size)
            res['index'] = sample.get('index')
            nll = sample.get('nll')
            if nll is not None:
                res['nll'] = float(nll)
                res['num_tokens'] = float(sample.get('num_tokens', 1))
            self.results.append(res)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        self.last_results = list(results)  # per caption, for paired tests
        if not results:  # the benchmark had no sample of this task
            return {}
        keys = ('objects_f1', 'color_acc', 'shape_acc', 'count_acc', 'exact')
        out = {k: float(np.mean([r[k] for r in results])) for k in keys}
        out['attr_acc'] = float(
            np.mean([(r['color_acc'] + r['shape_acc'] + r['count_acc']) / 3
                     for r in results]))
        for key in ('relation_acc', 'size_acc'):  # None: not applicable
            vals = [r[key] for r in results if r.get(key) is not None]
            if vals:
                out[key] = float(np.mean(vals))
        if all('object_count_acc' in r for r in results):
            out['object_count_acc'] = float(
                np.mean([r['object_count_acc'] for r in results]))
        for key in ('shape_acc', 'color_acc', 'size_acc', 'count_acc',
                    'object_count_acc', 'relation_acc', 'exact'):
            vals = [r[key] for r in results if r.get(key) is not None]
            if vals:  # 95% bootstrap interval over captions
                add_intervals(out, key, vals)
        nll = [(r['nll'], r['num_tokens']) for r in results if 'nll' in r]
        if nll:
            total, tokens = map(sum, zip(*nll))
            out['perplexity'] = math.exp(total / max(tokens, 1e-9))
        out['num_samples'] = len(results)
        return out
