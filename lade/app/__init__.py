"""The application built on the library: configs, training runs and their folders, reports, sweeps
and the command line (`python -m lade`). `import lade` never imports this package; it imports lade.
"""
