"""The application built on the library (`python -m lade`); `import lade` never imports this package.

config     the config schema, the shipped configs (configs/) and overrides: the recipe defaults
datasets   the data root, the CIFAR readers and the CIFAR-LT train / held-out / test splits
runs       run folders: files, marker, lock, atomic writes, checkpoints, status, saved arrays
training   the training loop (lade.train_step per batch), loss factory, LR per epoch, final logits
report     reports from a run folder's saved arrays
sweep      restartable grids of runs
cli        the command line
"""
