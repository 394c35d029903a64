"""The model variants behind one registry, in the spirit of peft's method registry: everything else asks it.

    from emotion_core import variants
    variant = variants.get("lora")
    model = variant.apply(base, variant.params({"lora_r": 16}))

Adding a variant is a file of its own with a :class:`Variant` subclass, and its line here.
"""

from emotion_core.variants.base import Choices, Dimension, Fixed, Range, Trial, Variant, VariantParams
from emotion_core.variants.dora import DoRA
from emotion_core.variants.full import Full
from emotion_core.variants.head import Head
from emotion_core.variants.lora import LoRA
from emotion_core.variants.qlora import QLoRA

REGISTRY: dict[str, Variant] = {variant.name: variant for variant in (Head(), LoRA(), QLoRA(), Full(), DoRA())}
# What ``--variant all`` searches: the write-up's three. The others are asked for by name.
DEFAULT_SEARCH: tuple[str, ...] = ("head", "lora", "qlora")


def get(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


__all__ = ["Choices", "DEFAULT_SEARCH", "Dimension", "Fixed", "REGISTRY", "Range", "Trial", "Variant", "VariantParams", "get", "names"]
