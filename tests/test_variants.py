import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotion_core import variants
from emotion_core.cache import build_model
from emotion_core.inference import evaluate_logits
from emotion_core.models import ModelLoadError, count_parameters, load_tokenizer
from emotion_core.precision import CPU_BF16_MIN_HIDDEN_SIZE, native_bf16
from tests.synthetic import build_tiny_gpt2


def frozen_dtype(model, variant, precision="auto"):
    return variants.get(variant).frozen_dtype(model, precision)


def trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_gpt2_tokenizer_gets_a_pad_token(tokenizer):
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"


def test_head_trains_only_the_head(tiny_model, tokenizer):
    model = build_model(tiny_model, "head", {}, tokenizer.pad_token_id)
    assert trainable_names(model) == ["score.weight"]
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_lora_targets_peft_defaults_with_fan_in_fan_out(tiny_model, tokenizer):
    model = build_model(tiny_model, "lora", {"lora_r": 4}, tokenizer.pad_token_id)
    names = trainable_names(model)
    assert any("c_attn.lora_A" in n for n in names) and any("score" in n for n in names)
    assert not any("c_proj" in n or "c_fc" in n for n in names)
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    assert layer.fan_in_fan_out is True and layer.lora_A["default"].weight.shape[0] == 4


def test_target_modules_override(tiny_model, tokenizer):
    model = build_model(tiny_model, "lora", {"lora_targets": ["c_fc"]}, tokenizer.pad_token_id)
    assert any("c_fc.lora_A" in n for n in trainable_names(model))
    assert not any("c_attn.lora" in n for n in trainable_names(model))


def test_qlora_quantizes_the_base_to_4bit(tiny_model, tokenizer):
    from emotion_core.quantization import import_bitsandbytes

    bnb = import_bitsandbytes()

    model = build_model(tiny_model, "qlora", {}, tokenizer.pad_token_id)
    c_attn = model.base_model.model.transformer.h[0].attn.c_attn
    assert isinstance(c_attn.base_layer, bnb.nn.Linear4bit)
    assert c_attn.base_layer.weight.quant_type == "nf4" and c_attn.fan_in_fan_out is False
    assert c_attn.base_layer.compute_dtype == torch.float32  # bf16 is ~35x slower on a CPU
    trainable, total = count_parameters(model)
    assert 0 < trainable < total


def test_only_a_4bit_base_imports_bitsandbytes(tiny_model, data_folder):
    """In a command's process, a LoRA run leaves bitsandbytes unimported (its import asks the hub for a CPU kernel), and a QLoRA base loaded
    later in the same process still gets peft's 4-bit LoRA layers. In a fresh process: this one imports it for the
    4-bit tests."""
    code = f"""
import sys
import study  # what every command imports first: it defers bitsandbytes
from emotion_core import TrainConfig, load_splits, load_tokenizer, tokenize_splits, train
from emotion_core.cache import build_model
tokenizer = load_tokenizer({tiny_model!r})
data = tokenize_splits(load_splits({data_folder!r}), tokenizer)
train(TrainConfig(model={tiny_model!r}, variant="lora", epochs=1, batch_size=16), data, tokenizer)
print(sys.modules.get("bitsandbytes") is not None)
layer = build_model({tiny_model!r}, "qlora", {{}}, tokenizer.pad_token_id).base_model.model.transformer.h[0].attn.c_attn
print(type(layer).__module__ + "." + type(layer).__name__)
"""
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": root}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "peft.tuners.lora.bnb.Linear4bit"], done.stdout


def test_qlora_trains_after_an_evaluation(tmp_path, tokenizer):
    """An evaluation (a no-grad forward in eval mode) must leave the 4-bit layers trainable: bitsandbytes >= 0.49
    repacks them for a CPU inference kernel there, after which backward failed. 64 wide: one full 4-bit block."""
    model = build_model(str(build_tiny_gpt2(tmp_path / "gpt2-64", n_embd=64)), "qlora", {"lora_dropout": 0.0}, tokenizer.pad_token_id)
    inputs, labels = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]]), torch.tensor([1, 4])

    def lora_grads():
        model.train()
        model.zero_grad()
        torch.manual_seed(0)  # the same masks for GPT-2's own dropout
        model(input_ids=inputs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n}

    before = lora_grads()
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids=inputs).logits
    after = lora_grads()
    assert evaluated.shape == (2, 6) and len(before) == 2 and all(g.abs().sum() > 0 for g in before.values())
    assert all(torch.allclose(before[n], after[n]) for n in before)


def test_precision_sets_the_frozen_weights_dtype(tiny_model, tokenizer, tmp_path):
    model = build_model(tiny_model, "lora", {}, tokenizer.pad_token_id, precision="bf16")
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # AdamW's updates need them
    assert model.config._attn_implementation == ("sdpa" if torch.cuda.is_available() else "eager")
    assert frozen_dtype(tiny_model, "qlora", "bf16") == frozen_dtype(tiny_model, "full", "bf16") == frozen_dtype(tiny_model, "lora", "fp32") == torch.float32
    # auto: bf16 only where it pays, which on a CPU takes a model of some width
    wide = str(build_tiny_gpt2(tmp_path / "wide", n_layer=1, n_embd=CPU_BF16_MIN_HIDDEN_SIZE))
    assert frozen_dtype(wide, "head") == (torch.bfloat16 if native_bf16() else torch.float32)
    assert frozen_dtype(tiny_model, "head") == (torch.bfloat16 if native_bf16() and torch.cuda.is_available() else torch.float32)
    with pytest.raises(ValueError, match="unknown precision"):
        frozen_dtype(tiny_model, "lora", "fp16")


def test_last_real_token_is_pooled(tiny_model, tokenizer, tokenized):
    """A sentence gives the same logits alone as in a batch padded to a longer one."""
    model = build_model(tiny_model, "head", {"head_dropout": 0.0}, tokenizer.pad_token_id)
    batch = tokenized.validation.select([0, len(tokenized.validation) - 1])  # longest and shortest
    assert batch["length"][0] > batch["length"][1]
    together = evaluate_logits(model, batch, tokenizer)
    alone = evaluate_logits(model, batch.select([1]), tokenizer)
    assert torch.allclose(torch.tensor(together[1]), torch.tensor(alone[0]), atol=1e-5)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="--model /path/to/folder"):
        load_tokenizer(str(tmp_path / "no-model"))
