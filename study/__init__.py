"""emotion-study's Optuna side: the ``emotion-study`` command (study.cli), its settings (study.settings) and what it
records in Optuna storage (study.records). The modules whose names start with ``_`` are its machinery."""
