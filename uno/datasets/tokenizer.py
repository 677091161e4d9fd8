"""A closed-vocabulary word tokenizer for ShapesWorld text.

Text is lower-cased and split into words, with ``.`` and ``,`` as tokens of
their own. Ids are fixed: six special tokens first (``<pad>`` = 0,
``<bos>``, ``<eos>``, ``<unk>``, ``<vision_start>``, ``<vision_end>`` = 5),
then punctuation and the sorted words, then optional padding entries up to
a requested ``vocab_size``. Sorting makes ids stable across runs and
machines, so checkpoints and cached token ids stay valid.
"""
import re
from typing import Dict, Iterable, List, Optional, Sequence

from uno.datasets.shapesworld import ShapesWorld
from uno.registry import TOKENIZERS

SPECIAL_TOKENS = ('<pad>', '<bos>', '<eos>', '<unk>', '<vision_start>',
                  '<vision_end>')
PUNCTUATION = ('.', ',')
_TOKEN_RE = re.compile(r"[^\s.,]+|[.,]")


@TOKENIZERS.register_module()
class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary.

    Args:
        words (Sequence[str], optional): Vocabulary words; duplicates are
            dropped and the rest sorted. Defaults to None, meaning
            :meth:`ShapesWorld.words`.
        vocab_size (int, optional): Pad the vocabulary with ``<extra_i>``
            tokens to exactly this size (e.g. to match an embedding table).
            Defaults to None (no padding).

    Example:
        >>> tok = WordTokenizer()
        >>> ids = tok.encode('A red circle.')
        >>> tok.decode(ids)
        'a red circle.'
    """

    def __init__(self,
                 words: Optional[Sequence[str]] = None,
                 vocab_size: Optional[int] = None) -> None:
        if words is None:
            words = ShapesWorld.words()
        words = sorted({w.lower() for w in words} - set(PUNCTUATION))
        bad = [w for w in words if not _TOKEN_RE.fullmatch(w)]
        if bad:
            raise ValueError(f'vocabulary words must be single tokens '
                             f'without spaces or punctuation, got {bad[:5]}')
        tokens = [*SPECIAL_TOKENS, *PUNCTUATION, *words]
        clash = set(tokens[len(SPECIAL_TOKENS):]) & set(SPECIAL_TOKENS)
        if clash:
            raise ValueError(f'words clash with special tokens: {clash}')
        self._num_text = len(tokens)  # ids at or past this are padding
        if vocab_size is not None:
            if vocab_size < len(tokens):
                raise ValueError(
                    f'vocab_size={vocab_size} is smaller than the '
                    f'{len(tokens)} tokens (specials, punctuation, words)')
            tokens += [f'<extra_{i}>' for i in range(vocab_size - len(tokens))]
        self._tokens: List[str] = tokens
        self._ids: Dict[str, int] = {t: i for i, t in enumerate(tokens)}

    # --- ids -----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, including specials and padding."""
        return len(self._tokens)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def vision_start_id(self) -> int:
        return 4

    @property
    def vision_end_id(self) -> int:
        return 5

    @property
    def special_ids(self) -> List[int]:
        return list(range(len(SPECIAL_TOKENS)))

    @property
    def tokens(self) -> List[str]:
        """Token of each id, in id order."""
        return list(self._tokens)

    def __len__(self) -> int:
        return self.vocab_size

    # --- text ----------------------------------------------------------------
    def tokenize(self, text: str) -> List[str]:
        """Lower-cased words and punctuation marks of ``text``."""
        return _TOKEN_RE.findall(text.lower())

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text``, without special tokens.

        Unknown words map to :attr:`unk_id`.
        """
        unk = self.unk_id
        return [self._ids.get(t, unk) for t in self.tokenize(text)]

    __call__ = encode

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids``: words joined by spaces, punctuation attached.

        Args:
            ids (Iterable[int]): Token ids (ints or 0-d tensors/arrays).
            skip_special (bool): Drop special and padding tokens (``<unk>``
                is kept, as it marks a lost word). Defaults to True.

        Returns:
            str: E.g. ``'a red circle, a blue star.'``.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f'token id {i} outside [0, '
                                 f'{self.vocab_size})')
            special = i < len(SPECIAL_TOKENS) or i >= self._num_text
            if skip_special and special and i != self.unk_id:
                continue
            out.append(self._tokens[i])
        return re.sub(r' ([.,])', r'\1', ' '.join(out))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(vocab_size={self.vocab_size})'
