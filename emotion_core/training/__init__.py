"""Training in small parts: the loop (``loop``), its callbacks (``callbacks``), the length-grouped sampler
(``sampler``) and checkpoints (``checkpoint``). ``config`` holds what a run is given and gives back."""

from emotion_core.training.config import Evaluation, Result, TrainConfig

__all__ = ["Evaluation", "Result", "TrainConfig", "release_memory", "train"]


def __getattr__(name: str):
    # The loop imports torch and transformers: only when it is asked for.
    if name in ("train", "release_memory"):
        from emotion_core.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
