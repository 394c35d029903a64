"""The one private Trainer method we override, pinned: a transformers release that renames it or stops calling it
fails here, not silently in a slower study."""

import inspect

from transformers import Trainer, TrainingArguments

from emotion_core.cache import build_model
from emotion_core.data import padding_collator
from emotion_core.training.sampler import trainer_class
from tests.test_fast import padded_tokens


def test_trainer_still_has_the_private_sampler_hook_we_override():
    assert "_get_train_sampler" in vars(Trainer)
    assert list(inspect.signature(Trainer._get_train_sampler).parameters) == ["self", "train_dataset"]
    assert "_get_train_sampler" in inspect.getsource(Trainer._get_dataloader) or "_get_train_sampler" in inspect.getsource(Trainer.get_train_dataloader)


def test_the_trainer_batches_training_rows_by_length(tiny_model, tokenizer, tokenized, tmp_path):
    """Through the Trainer's own dataloader: the batches pad exactly as sorting the rows by length does (a shuffled
    order, the Trainer's default, pads far more)."""
    model = build_model(tiny_model, "lora", {}, tokenizer.pad_token_id)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, remove_unused_columns=False, use_cpu=True,
                             report_to="none")
    collate = padding_collator(tokenizer)
    trainer = trainer_class()(model=model, args=args, train_dataset=tokenized.train,
                              data_collator=lambda rows: collate([{k: v for k, v in r.items() if k != "length"} for r in rows]))
    padded = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())
    lengths = tokenized.train["length"][:]
    assert padded == padded_tokens(sorted(range(len(lengths)), key=lambda i: -lengths[i]), lengths, 16)
    plain = Trainer(model=model, args=args, train_dataset=tokenized.train, data_collator=trainer.data_collator)
    assert sum(batch["input_ids"].numel() for batch in plain.get_train_dataloader()) > padded
