"""GPU check of a study's reliability; needs a CUDA GPU, about a minute, no network.

1. A real CUDA out-of-memory error in one trial (the allocator is capped for that trial only) fails that trial with
   its reason, frees its memory, and the study goes on.
2. 20 trials in one process: the peak allocated GPU memory of the last trials equals that of the first ones, and the
   memory allocated between trials does not grow.

    HF_HUB_OFFLINE=1 python scripts/gpu_reliability.py
    HF_HUB_OFFLINE=1 python scripts/gpu_reliability.py --dry-run    # on a CPU: the same code path, 2 trials, no GPU checks
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from emotion_core.cache import ModelCache  # noqa: E402
from study import records  # noqa: E402
from study._backends import open_storage  # noqa: E402
from study._command import configure_logging  # noqa: E402
from study._inputs import prepare_data  # noqa: E402
from study._opened import OpenedStudy  # noqa: E402
from study._show.progress import Progress  # noqa: E402
from study._trials.loop import run_trials  # noqa: E402
from study._trials.objective import Objective  # noqa: E402
from study.settings import StudySettings  # noqa: E402
from tests.synthetic import build_tiny_gpt2, write_txt_folder  # noqa: E402

MIB = 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run the study part on a CPU (2 small trials) and skip the GPU checks")
    dry_run = parser.parse_args(argv).dry_run
    if not torch.cuda.is_available() and not dry_run:
        print("no CUDA GPU")
        return 2
    folder = Path(tempfile.mkdtemp(prefix="gpu-reliability-"))
    # 4 layers, 256 wide: big enough that its weights cannot fit in the 1 MiB the first trial is allowed.
    model = build_tiny_gpt2(folder / "model", n_layer=2 if dry_run else 4, n_embd=32 if dry_run else 256)
    data = write_txt_folder(folder / "data", n_train=48 if dry_run else 480, n_eval=24 if dry_run else 96)
    settings = StudySettings(
        trials=2 if dry_run else 20, model=str(model), data=str(data), variant="lora", storage=f"sqlite:///{folder}/study.db",
        study_name="gpu", epochs=1 if dry_run else 2, batch_size=16 if dry_run else 32, pruner="none", sampler="random",
        output_dir=str(folder / "out"), baseline=False, patience=0,
    )
    configure_logging(False)
    storage = open_storage(settings.storage)
    opened = OpenedStudy(storage, optuna.create_study(study_name="gpu", storage=storage, direction="maximize"), settings).with_search()
    study = opened.study
    tokenizer, tokenized = prepare_data(settings)
    progress = Progress(study, settings.trials)
    objective = Objective(opened, {settings.model_labels()[0]: (tokenizer, tokenized)}, progress, ModelCache(), store_checkpoints=False)
    if dry_run:
        run_trials(opened, objective, settings.trials, [progress])
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        print(f"dry run: {len(finished)} of {settings.trials} trials finished on the CPU")
        return 0 if len(finished) == settings.trials else 1

    baseline = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((baseline + MIB) / total)  # trial 0 may allocate 1 MiB more: it OOMs
    allocated_after = []

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        torch.cuda.set_per_process_memory_fraction(1.0)
        allocated_after.append(round((torch.cuda.memory_allocated() - baseline) / MIB, 2))

    run_trials(opened, objective, settings.trials, [progress, after_trial])

    first = study.trials[0]
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    peaks = [records.TrialResult.read(t).peak_memory_mib for t in finished]
    reason = records.fail_reason(first) or ""
    print(f"\ntrial 0: {first.state.name}, fail_reason: {reason}")
    print(f"allocated MiB above the start after each trial: {allocated_after}")
    print(f"finished trials: {len(finished)}; peak allocated MiB, first 5: {peaks[:5]}, last 5: {peaks[-5:]}")
    checks = {
        "trial 0 failed out of GPU memory": first.state == TrialState.FAIL and "out of GPU memory" in reason,
        "its memory was freed": allocated_after[0] <= 1.0,
        "the study went on to 20 finished trials": len(finished) == 20,
        # from trial 1 on: the first successful trial also allocates what CUDA libraries keep (cuBLAS workspaces)
        "no growth between trials": max(allocated_after[1:]) - min(allocated_after[1:]) <= 1.0,
        "last peaks within 5% of the first": statistics.median(peaks[-5:]) <= 1.05 * statistics.median(peaks[:5]),
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
