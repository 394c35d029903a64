"""What a fork server imports once for the worker processes it forks (multiprocessing preloads modules by name and
runs no function): the libraries quieted first, as the command that started it asked, then the training code."""

import os

from study._command import QUIET_ENVIRONMENT, quiet_imported_libraries

if not os.environ.get("EMOTION_STUDY_VERBOSE"):
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    quiet_imported_libraries()

import peft  # noqa: E402, F401 - the slow import, once for all workers
import transformers  # noqa: E402, F401

import emotion_core.training.loop  # noqa: E402, F401
import study._trials.objective  # noqa: E402, F401

quiet_imported_libraries()  # now that transformers is here
