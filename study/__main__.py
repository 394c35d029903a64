"""python -m study: the emotion-study command."""

import sys

from study.cli import main

sys.exit(main())
