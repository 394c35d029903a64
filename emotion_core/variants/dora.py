"""DoRA: LoRA with the pretrained weight split into magnitude and direction (peft's ``use_dora=True``)."""

from typing import Any

from emotion_core.variants.lora import LoRA


class DoRA(LoRA):
    name = "dora"
    summary = "LoRA with weight decomposition (peft use_dora)"

    def config_options(self) -> dict[str, Any]:
        return {"use_dora": True}
