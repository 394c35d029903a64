"""What one process keeps between training runs: the loaded bases and the head's pooled features.

Its owner (a study's worker, study.final, the bench) creates one and passes it to every ``train`` call; ``train``
without one keeps nothing. The first run reads a base from disk; later ones train a deep copy of it (bitsandbytes'
4-bit weights copy too), each with a fresh head drawn from its seed.
"""

from __future__ import annotations

import copy
import gc
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from emotion_core.labels import LABELS
from emotion_core.sources import model_key

if TYPE_CHECKING:
    from torch import nn

    from emotion_core.variants import Variant


class ModelCache:
    """Loaded bases, keyed by (model, labels, 4-bit or not, dtype), at most ``max_bases`` of them (two cover a study
    that searches 4-bit and full-precision variants), and the head variant's features (``emotion_core.features``).

    ``freeze_gc``: once a base is loaded, move what is alive (the libraries, the data, the base) out of the garbage
    collector's sight, so that the collection after each trial takes milliseconds instead of a third of a second. It
    changes the whole process, so only a process that runs trials and nothing else should ask for it.
    """

    def __init__(self, max_bases: int = 2, freeze_gc: bool = False):
        self.max_bases = max_bases
        self.freeze_gc = freeze_gc
        self._bases: OrderedDict[tuple, nn.Module] = OrderedDict()
        self.features: dict[tuple, Any] = {}  # owned by emotion_core.features

    def _key(self, name: str, variant: Variant, precision: str, labels: Sequence[str]) -> tuple:
        return (model_key(name), tuple(labels), variant.quantized, variant.frozen_dtype(name, precision))

    def fresh_base(self, name: str, variant: Variant, pad_token_id: int, *, seed: int = 0, precision: str = "auto",
                   labels: Sequence[str] = LABELS) -> nn.Module:
        """A copy of the pretrained model for one run, with a new head drawn from ``seed``."""
        from emotion_core.models import reset_head

        key = self._key(name, variant, precision, labels)
        if key in self._bases:
            self._bases.move_to_end(key)
        else:
            self._bases[key] = variant.load_base(name, pad_token_id, precision, labels)
            while len(self._bases) > self.max_bases:
                self._bases.popitem(last=False)
            if self.freeze_gc:
                gc.collect()
                gc.freeze()
        model = copy.deepcopy(self._bases[key])
        model.config.pad_token_id = pad_token_id
        reset_head(model, seed)
        return model

    def clear(self) -> None:
        """Forget the loaded bases and features (their memory goes with the next garbage collection)."""
        self._bases.clear()
        self.features.clear()


def build_model(name: str, variant: str, params: dict | None, pad_token_id: int, *, seed: int = 0, precision: str = "auto",
                labels: Sequence[str] = LABELS, cache: ModelCache | None = None) -> nn.Module:
    """The model a run of ``variant`` trains: a fresh copy of the base (from ``cache``, an
    emotion_core.cache.ModelCache, when given) made into the variant with ``params`` (its own parameters, by name)."""
    from transformers import set_seed

    from emotion_core import variants

    spec = variants.get(variant)
    base = (cache or ModelCache()).fresh_base(name, spec, pad_token_id, seed=seed, precision=precision, labels=labels)
    # Seeded here, after the base: reading it from disk draws its fresh head from the global generator, which a copy
    # from the cache does not, and the adapter's init must not depend on which of the two this run got.
    set_seed(seed)
    return spec.apply(base, spec.params(params))
