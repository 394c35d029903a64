"""--report-to: each trial's training curves in a tracker the user already has (TensorBoard or MLflow), through the HF
Trainer's own integrations. Filled in by study._trackers' functions; "none" sends nothing."""

from __future__ import annotations

from study.settings import StudySettings


def trial_trackers(settings: StudySettings, study_name: str):
    """A function from a trial to the Trainer callbacks that send its curves to the tracker; None for --report-to none."""
    if settings.report_to == "none":
        return None
    raise NotImplementedError(settings.report_to)
