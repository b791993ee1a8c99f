"""`python -m lade ...`: the command line application (lade.app.cli)."""
import sys

from lade.app.cli import main

sys.exit(main())
