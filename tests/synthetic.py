"""Self-contained test material: synthetic sentences, a word-level tokenizer and a tiny random GPT-2."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = {
    "sadness": ["sad", "lonely", "miserable", "gloomy", "heartbroken"],
    "joy": ["happy", "glad", "cheerful", "delighted", "joyful"],
    "love": ["loving", "affectionate", "adoring", "tender", "romantic"],
    "anger": ["angry", "furious", "irritated", "mad", "resentful"],
    "fear": ["afraid", "scared", "terrified", "nervous", "anxious"],
    "surprise": ["surprised", "amazed", "astonished", "shocked", "stunned"],
}
# The emotion word ends every sentence: a model that pools the last real token sees it directly, so even a
# tiny random GPT-2 learns the task in a few seconds.
TEMPLATES = [
    "i feel {w}",
    "the {t} made me feel {w}",
    "since the {t} i have been {w}",
    "honestly when i think of the {t} i am {w}",
    "after the {t} i was so {w}",
]
# Another data set: three sentiment labels that share no word with the emotions.
SENTIMENT_WORDS = {
    "positive": ["great", "wonderful", "excellent", "superb", "fine"],
    "negative": ["awful", "terrible", "dreadful", "poor", "bad"],
    "neutral": ["ordinary", "average", "typical", "plain", "normal"],
}
THINGS = ["weather", "news", "party", "job", "trip", "movie", "letter", "garden", "exam", "dinner"]


def sentences(n: int, seed: int = 0, words: dict[str, list[str]] = WORDS) -> list[tuple[str, str]]:
    """``n`` (text, label name) pairs, every label of ``words`` equally often; the label's word decides the label."""
    rng = random.Random(seed)
    labels = list(words)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        text = rng.choice(TEMPLATES).format(w=rng.choice(words[label]), t=rng.choice(THINGS))
        rows.append((text, label))
    rng.shuffle(rows)
    return rows


def write_txt_folder(folder: Path, n_train: int = 120, n_eval: int = 48, seed: int = 0, words: dict[str, list[str]] = WORDS) -> Path:
    """A data folder in the original ``text;label`` format."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", n_train, 0), ("validation", n_eval, 1), ("test", n_eval, 2)):
        lines = [f"{text};{label}" for text, label in sentences(n, seed + offset, words)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_hub_folder(folder: Path, names: list[str], rows: dict[str, list[tuple[str, str]]]) -> Path:
    """A data set repository as the hub's download tools write it (dair-ai/emotion's layout): README.md whose YAML
    declares a ``split`` config (the default) and an ``unsplit`` one, with ``label`` a ``class_label`` of ``names``, and
    parquet files under split/ and unsplit/. The parquet holds plain integer labels: the names are the README's."""
    import pandas as pd
    import yaml

    frames = {split: pd.DataFrame({"text": [t for t, _ in r], "label": [names.index(label) for _, label in r]})
              for split, r in rows.items()}
    frames["unsplit/train"] = pd.concat(list(frames.values()), ignore_index=True)

    def info(config: str, splits: list[str]) -> dict:  # a new dict each time: yaml writes no &anchors, as the hub's cards
        label = {"class_label": {"names": {str(i): name for i, name in enumerate(names)}}}
        sizes = [{"name": s.split("/")[-1], "num_bytes": int(frames[s]["text"].str.len().sum()), "num_examples": len(frames[s])}
                 for s in splits]
        features = [{"name": "text", "dtype": "string"}, {"name": "label", "dtype": label}]
        return {"config_name": config, "features": features, "splits": sizes}

    card = {
        "task_categories": ["text-classification"],
        "dataset_info": [info("split", list(rows)), info("unsplit", ["unsplit/train"])],
        "configs": [
            {"config_name": "split", "data_files": [{"split": s, "path": f"split/{s}-*"} for s in rows], "default": True},
            {"config_name": "unsplit", "data_files": [{"split": "train", "path": "unsplit/train-*"}]},
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n\n# A synthetic data set\n")
    for name, frame in frames.items():
        path = folder / (name if "/" in name else f"split/{name}")
        path.parent.mkdir(exist_ok=True)
        frame.to_parquet(f"{path}-00000-of-00001.parquet", index=False)
    return folder


def vocabulary() -> list[str]:
    words = {w for template in TEMPLATES for w in template.split() if "{" not in w}
    words |= {w for ws in (*WORDS.values(), *SENTIMENT_WORDS.values()) for w in ws} | set(THINGS)
    return sorted(words)


def build_tokenizer(folder: Path):
    """A word-level fast tokenizer with an EOS token and no pad token, as GPT-2's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|endoftext|>": 1}
    for word in vocabulary():
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_tiny_gpt2(folder: Path, n_layer: int = 2, n_embd: int = 32, seed: int = 0) -> Path:
    """A random GPT-2 (Conv1D layers, as the real one) with the test tokenizer, saved as a model folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder
