"""emotion-study's Optuna side: the ``emotion-study`` command (study.cli), its settings (study.settings) and what it
records in Optuna storage (study.records). The modules whose names start with ``_`` are its machinery."""

from emotion_core.quantization import defer_bitsandbytes

defer_bitsandbytes()  # before anything imports peft, which imports bitsandbytes: only a 4-bit variant loads it
