"""bitsandbytes, the 4-bit library, only in a process that loads a 4-bit base.

peft imports bitsandbytes wherever it is installed (at ``import peft``, which transformers' Trainer does, and again when
it wraps layers in LoRA), and bitsandbytes' import, on a CPU with AVX512-BF16, asks the Hugging Face hub for a CPU kernel
(``kernels-community/quantization-bitsandbytes``, through the ``kernels`` package) and warns when it gets none. So a
process may defer bitsandbytes (the emotion-study commands do, at ``import study``): a None in ``sys.modules`` makes
importing it raise ImportError, which peft and transformers take for "not installed". :func:`import_bitsandbytes`
(QLoRA) brings it back; code of one's own that uses bitsandbytes in such a process imports it through that function.
"""

from __future__ import annotations

import sys
from types import ModuleType

# What peft and transformers cache of their "is bitsandbytes installed?" once asked: module, functools.lru_cache'd names.
_AVAILABILITY_CHECKS = {
    "peft.import_utils": ("is_bnb_available", "is_bnb_4bit_available"),
    "transformers.utils.import_utils": ("is_bitsandbytes_available",),
}


def defer_bitsandbytes() -> None:
    """Keep bitsandbytes out of this process until :func:`import_bitsandbytes`; nothing where it is imported already."""
    sys.modules.setdefault("bitsandbytes", None)


def bitsandbytes_deferred() -> bool:
    return "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None


def import_bitsandbytes() -> ModuleType:
    """bitsandbytes, imported now if it was deferred, with peft and transformers told that it is installed after all."""
    deferred = bitsandbytes_deferred()
    if deferred:
        del sys.modules["bitsandbytes"]
    import bitsandbytes

    if deferred:
        for module, names in _AVAILABILITY_CHECKS.items():
            if module in sys.modules:
                for name in names:
                    getattr(sys.modules[module], name).cache_clear()
        helpers = sys.modules.get("peft.helpers")  # took it for absent at its import
        if helpers is not None and getattr(helpers, "bnb", None) is None:
            helpers.bnb = bitsandbytes
    return bitsandbytes
