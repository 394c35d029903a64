"""The fast paths give what the plain ones give: the head on cached features, the base read once and copied, the
tokenization cache read by another process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emotion_core import variants
from emotion_core.cache import ModelCache, build_model
from emotion_core.data import load_splits, tokenize_splits
from emotion_core.features import feature_splits
from emotion_core.inference import evaluate_logits
from emotion_core.models import head_module
from emotion_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def head_config(model, dropout, **changes):
    return TrainConfig(model=model, variant="head", learning_rate=3e-2, epochs=3, batch_size=16, variant_params={"head_dropout": dropout}, **changes)


def test_head_on_cached_features_is_the_head_on_the_model(tiny_model, tokenizer, tokenized, tmp_path):
    """Dropout 0 and the same seed: the same computation, batch for batch, up to float rounding."""
    plain = train(head_config(tiny_model, dropout=0.0, feature_cache=False), tokenized, tokenizer,
                  evaluate_test=True, save_to=tmp_path / "plain")
    fast = train(head_config(tiny_model, dropout=0.0), tokenized, tokenizer, evaluate_test=True, save_to=tmp_path / "fast")
    assert fast.val_accuracy == plain.val_accuracy > 0.4
    assert [e.accuracy for e in fast.evaluations] == [e.accuracy for e in plain.evaluations]
    assert [e.step for e in fast.evaluations] == [e.step for e in plain.evaluations]
    assert [e.loss for e in fast.evaluations] == pytest.approx([e.loss for e in plain.evaluations], abs=1e-5)
    assert fast.test["accuracy"] == plain.test["accuracy"]
    assert (fast.trainable_params, fast.total_params, fast.optimizer_steps) == (plain.trainable_params, plain.total_params, 45)
    plain_weights, fast_weights = load_file(plain.saved_to), load_file(fast.saved_to)
    assert set(fast_weights) == set(plain_weights) == {"score.weight"}
    assert torch.allclose(fast_weights["score.weight"], plain_weights["score.weight"], atol=1e-5)

    # The saved head loads into the real model (what final and predict do) and gives the accuracy it was selected on.
    model = build_model(tiny_model, "head", {"head_dropout": 0.0}, tokenizer.pad_token_id)
    model.load_state_dict(fast_weights, strict=False)
    logits = evaluate_logits(model, tokenized.validation, tokenizer)
    accuracy = float((torch.tensor(logits).argmax(-1) == torch.tensor(tokenized.validation["label"])).float().mean())
    assert accuracy == pytest.approx(fast.val_accuracy)


def test_head_on_cached_features_in_bf16(tiny_model, tokenizer, tokenized):
    """Over a bf16 base both paths compute the features in bf16 and the head under bf16 autocast, but in other batch
    shapes: bf16 rounding may move a sentence (seen: 1 of 60 at one of six evaluations, losses within 5e-4)."""
    plain = train(head_config(tiny_model, dropout=0.0, feature_cache=False, precision="bf16"), tokenized, tokenizer)
    fast = train(head_config(tiny_model, dropout=0.0, precision="bf16"), tokenized, tokenizer)
    assert plain.val_accuracy > 0.4
    assert [e.accuracy for e in fast.evaluations] == pytest.approx([e.accuracy for e in plain.evaluations], abs=2 / 60)
    assert [e.loss for e in fast.evaluations] == pytest.approx([e.loss for e in plain.evaluations], abs=5e-3)


def test_head_with_dropout_learns_as_well_on_features(tiny_model, tokenizer, tokenized):
    """Dropout draws other masks on features than in the model, so one seed's accuracies differ by up to 6 of the 60
    sentences either way; the mean of three seeds stays close."""
    plain = [train(head_config(tiny_model, dropout=0.2, seed=s, feature_cache=False), tokenized, tokenizer).val_accuracy for s in range(3)]
    fast = [train(head_config(tiny_model, dropout=0.2, seed=s), tokenized, tokenizer).val_accuracy for s in range(3)]
    assert abs(sum(fast) / 3 - sum(plain) / 3) <= 0.05 and min(fast) > 0.4


def test_features_are_computed_once_per_cache(tiny_model, tokenizer, tokenized):
    cache, head = ModelCache(), variants.get("head")
    first = feature_splits(tiny_model, head, tokenized, tokenizer, cache)
    again = feature_splits(tiny_model, head, tokenized, tokenizer, cache, with_test=True)
    assert first.seconds > 0 and again.train is first.train and first.test is None and len(again.test) == len(tokenized.test)
    assert feature_splits(tiny_model, head, tokenized, tokenizer, cache, with_test=True).seconds == 0.0
    assert feature_splits(tiny_model, head, tokenized, tokenizer, ModelCache()).seconds > 0  # another cache keeps its own
    assert again.train.features.shape == (len(tokenized.train), 32)
    assert again.validation.lengths == tokenized.validation["length"][:]


def test_base_is_read_once_and_each_copy_is_fresh(tiny_model, tokenizer):
    cache, lora = ModelCache(), variants.get("lora")
    a = cache.fresh_base(tiny_model, lora, tokenizer.pad_token_id, seed=1)
    b = cache.fresh_base(tiny_model, lora, tokenizer.pad_token_id, seed=1)
    c = cache.fresh_base(tiny_model, lora, tokenizer.pad_token_id, seed=2)
    assert a is not b
    assert torch.equal(a.score.weight, b.score.weight) and not torch.equal(a.score.weight, c.score.weight)
    with torch.no_grad():
        a.transformer.h[0].attn.c_attn.weight.add_(1.0)  # what training one copy does stays in it
    assert not torch.equal(a.transformer.h[0].attn.c_attn.weight, b.transformer.h[0].attn.c_attn.weight)
    disk = lora.load_base(tiny_model, tokenizer.pad_token_id)
    assert torch.equal(b.transformer.h[0].attn.c_attn.weight, disk.transformer.h[0].attn.c_attn.weight)
    assert b.config.pad_token_id == tokenizer.pad_token_id


def test_a_copied_4bit_base_trains_on_its_own(tiny_model, tokenizer):
    from emotion_core.quantization import import_bitsandbytes

    bnb = import_bitsandbytes()

    cache = ModelCache()
    first = build_model(tiny_model, "qlora", {}, tokenizer.pad_token_id, cache=cache)
    second = cache.fresh_base(tiny_model, variants.get("qlora"), tokenizer.pad_token_id)
    layer = first.base_model.model.transformer.h[0].attn.c_attn.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_state is not None
    inputs = torch.tensor([[3, 4, 5, 6]])
    before = second(input_ids=inputs).logits.detach()
    first.train()
    first(input_ids=inputs, labels=torch.tensor([1])).loss.backward()
    assert any(p.grad is not None for n, p in first.named_parameters() if "lora_A" in n)
    assert torch.equal(second(input_ids=inputs).logits.detach(), before)


def test_frozen_base_of_the_head_runs_in_eval_mode(tiny_model, tokenizer, tokenized):
    model = build_model(tiny_model, "head", {"head_dropout": 0.0}, tokenizer.pad_token_id)
    model.train()
    batch = {"input_ids": torch.tensor([tokenized.train[0]["input_ids"]])}
    first, second = model(**batch).logits, model(**batch).logits
    assert torch.equal(first, second)  # no dropout inside the base
    assert not model.transformer.training and model.training and head_module(model)[1].training


def test_another_process_reads_the_tokenization_cache(tmp_path, data_folder, tiny_model, tokenizer):
    cache = tmp_path / "cache"
    tokenizer("i feel fine", truncation=True, max_length=8)  # a used tokenizer keeps its key (its backend holds the truncation)
    first = tokenize_splits(load_splits(data_folder), tokenizer, cache_dir=cache)
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    script = (
        "import json, sys\n"
        "from emotion_core.data import load_splits, tokenize_splits\n"
        "from emotion_core.models import load_tokenizer\n"
        f"data = tokenize_splits(load_splits({data_folder!r}), load_tokenizer({tiny_model!r}), cache_dir={str(cache)!r})\n"
        "print(json.dumps({'key': data.key, 'files': [f['filename'] for f in data.train.cache_files],"
        " 'ids': data.validation['input_ids'][:]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    second = json.loads(out.stdout.strip().splitlines()[-1])
    assert second["key"] == first.key and second["ids"] == first.validation["input_ids"][:]
    assert second["files"] and all(f.startswith(str(cache / first.key)) for f in second["files"])
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == files  # nothing written: it did not tokenize again


def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_pad_little_on_a_small_subset():
    """A bench-sized subset (320 rows, batch 32): the HF sampler's groups of 2 batches padded 2.4x what sorting needs."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from emotion_core.training.sampler import length_grouped_sampler

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 60, (320,), generator=generator).tolist()
    sorted_tokens = padded_tokens(sorted(range(320), key=lambda i: -lengths[i]), lengths, 32)
    orders = [list(length_grouped_sampler(32, lengths, generator)) for _ in range(2)]
    for order in orders:
        assert sorted(order) == list(range(320))  # every row once per epoch
        assert padded_tokens(order, lengths, 32) == sorted_tokens
        assert lengths[order[0]] == max(lengths)  # the longest batch first
    assert orders[0] != orders[1]  # the batches come in another order each epoch
    assert padded_tokens(list(LengthGroupedSampler(32, lengths=lengths, generator=generator)), lengths, 32) > 1.3 * sorted_tokens
