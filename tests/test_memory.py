"""The CPU memory figure (emotion_core.memory): exact, repeatable whatever ran before it in the process, larger for a
larger setting, and None with a reason where it cannot be counted."""

from dataclasses import replace

import pytest
import torch

from emotion_core.cache import ModelCache
from emotion_core.memory import PeakMemory, TensorPeak
from emotion_core.training import TrainConfig, train
from study import records
from study._show.text import format_mib
from tests.synthetic import build_tiny_gpt2

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU figure; on a GPU it is max_memory_allocated")


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-256"), n_embd=256))


@pytest.fixture(scope="module")
def few(tokenized):
    """64 training and 16 validation sentences: 4 steps of 16 and 3 evaluations, well under a second a run."""
    return replace(tokenized, train=tokenized.train.select(range(64)), validation=tokenized.validation.select(range(16)))


def run(model, data, tokenizer, cache, variant="lora", batch_size=16, **variant_params):
    config = TrainConfig(model=model, variant=variant, variant_params=variant_params, epochs=1, batch_size=batch_size, learning_rate=1e-3)
    result = train(config, data, tokenizer, cache=cache)
    assert result.peak_memory_mib is not None, result.peak_memory_note
    return result


def peak(model, data, tokenizer, cache, variant="lora", **variant_params) -> float:
    return run(model, data, tokenizer, cache, variant, **variant_params).peak_memory_mib


def test_the_figure_is_the_peak_of_the_tensors_the_block_allocated():
    before = torch.empty(2**20)  # 4 MiB made before the block: its freeing inside does not count
    with PeakMemory() as memory:
        del before
        a = torch.empty(2**18)  # 1 MiB
        b = torch.empty(2**19)  # 2 MiB: 3 MiB live, the peak
        del a, b
        c = torch.empty(2**18)
    assert memory.peak_mib == 3.0 and memory.note is None
    assert memory.peak_rss_mib > 0
    del c


def test_inside_another_measurement_the_figure_is_none_with_the_reason():
    with PeakMemory() as outer:
        with PeakMemory() as inner:
            x = torch.empty(2**18)
        del x
    assert inner.peak_mib is None and "another profiler" in inner.note
    assert outer.peak_mib == 1.0 and outer.note is None


def test_restarting_the_profiler_at_optimizer_steps_changes_nothing():
    """The profiler is restarted after an optimizer step (so that a long run does not keep every event): the tensors
    alive across a restart (AdamW's state, the model's outputs) are still counted and their freeing too."""

    def count(rotate_s: float) -> tuple[int, int]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 6))
        optimizer = torch.optim.AdamW(model.parameters())
        counter = TensorPeak(rotate_s=rotate_s)
        assert counter.start() is None
        for rows in (8, 64, 16):
            model(torch.randn(rows, 64)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        counter.stop()
        return counter.peak_bytes, counter.restarts

    (every_step, restarts), (never, none) = count(0.0), count(1e9)
    assert restarts == 3 and none == 0
    assert every_step == never > 0


def test_identical_runs_report_the_same_memory_in_any_order(wide_model, few, tokenizer):
    """A LoRA r=8 run first with its cache, after a bigger run (full fine-tuning), after a smaller one (the head on
    cached features) and again: the RSS growth of such runs ranged from 0 to 100 MiB; this figure is exact."""
    cache = ModelCache()
    figures = [peak(wide_model, few, tokenizer, cache, lora_r=8)]
    full = peak(wide_model, few, tokenizer, cache, variant="full")
    figures.append(peak(wide_model, few, tokenizer, cache, lora_r=8))
    head = peak(wide_model, few, tokenizer, cache, variant="head")
    figures.append(peak(wide_model, few, tokenizer, cache, lora_r=8))
    figures.append(peak(wide_model, few, tokenizer, ModelCache(), lora_r=8))  # a fresh cache: the base read again
    print(f"LoRA r=8 MiB: {figures}, full: {full}, head: {head}")
    assert max(figures) <= 1.1 * min(figures)
    assert len(set(figures)) == 1  # in fact exactly equal: the same tensors are made
    assert head < figures[0] < full


def test_the_head_on_cached_features_reports_its_own_small_figure(wide_model, few, tokenizer):
    cache = ModelCache()
    figures = [peak(wide_model, few, tokenizer, cache, variant="head") for _ in range(2)]
    assert figures[0] == figures[1] and 0 < figures[0] < 1  # its gradients, AdamW state, batches and logits
    assert format_mib(figures[0]) != "0"


def test_a_bigger_setting_reports_more_memory(wide_model, few, tokenizer):
    cache = ModelCache()
    r4, r32, batch32 = (run(wide_model, few, tokenizer, cache, lora_r=r, batch_size=b) for r, b in ((4, 16), (32, 16), (4, 32)))
    print(f"LoRA MiB: r=4 {r4.peak_memory_mib}, r=32 {r32.peak_memory_mib}, r=4 at batch 32 {batch32.peak_memory_mib}")
    assert r4.peak_memory_mib < r32.peak_memory_mib < batch32.peak_memory_mib


def test_format_mib():
    assert [format_mib(v) for v in (None, 0.146, 5.171, 41.19, 567.5, 1140.75)] == ["-", "0.146", "5.17", "41.2", "568", "1141"]


def test_an_accuracy_memory_trial_without_a_figure_fails_with_the_reason(study_args, capsys):
    """Inside another measurement a trial's own cannot count: an accuracy,memory study then has no number to put on
    its front, so its trials fail with the reason instead of returning a meaningless one."""
    import optuna

    from study import run

    with PeakMemory():
        code = run.main(["--trials", "1", "--objective", "accuracy,memory", "--variant", "head", *study_args])
    assert code == 1 and "trials in a row failed" in capsys.readouterr().err  # it gives up after 3, as on any setup fault
    storage = study_args[study_args.index("--storage") + 1]
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert trials[0].user_attrs["fail_reason"].startswith("peak memory not measured: another profiler was running")
    result = records.TrialResult.read(trials[0])
    assert result.peak_memory_mib is None and "another profiler" in result.peak_memory_note
