"""PyTorch reference models for lade's ResNet-32 variants (tests and benchmarks only).

The module and parameter names are the ones lade's state_dict uses, so a dict
of NumPy arrays moves weights between the two without renaming:
conv1.weight, bn1.{weight,bias,running_mean,running_var}, layer1.0.conv1.weight,
..., cb_block.*, rb_block.* (LADE variant only), fc.weight, fc.bias.

Architecture (lade-spec.md §4): 3x3 stem 3->16, stages of BasicBlocks at
16/32/64 channels (5/5/4 blocks for the LADE variant, 5/5/5 for the classic
one), option-A shortcuts, global average pool, linear classifier with bias.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def shortcut_a(x, out_channels, stride):
    """Option-A shortcut: subsample rows/columns 0, s, 2s, ... and put the
    input channels between (out - in) / 2 zero channels on each side."""
    x = x[:, :, ::stride, ::stride]
    pad = (out_channels - x.shape[1]) // 2
    return F.pad(x, (0, 0, 0, 0, pad, pad))


class BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.out_channels = out_channels
        self.stride = stride
        self.needs_shortcut = stride != 1 or in_channels != out_channels

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = shortcut_a(x, self.out_channels, self.stride) if self.needs_shortcut else x
        return F.relu(y + skip)


class ResNet32(nn.Module):
    """variant 'lade': stages 5/5/4 plus cb_block and rb_block concatenated
    (128-d feature); variant 'classic': stages 5/5/5 (64-d feature)."""

    def __init__(self, num_classes=100, variant="lade"):
        super().__init__()
        if variant not in ("lade", "classic"):
            raise ValueError(f"unknown variant {variant!r}")
        self.variant = variant
        stage3_blocks = 4 if variant == "lade" else 5
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, 5, 1)
        self.layer2 = self._stage(16, 32, 5, 2)
        self.layer3 = self._stage(32, 64, stage3_blocks, 2)
        if variant == "lade":
            self.cb_block = BasicBlock(64, 64)
            self.rb_block = BasicBlock(64, 64)
            self.feature_dim = 128
        else:
            self.feature_dim = 64
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    @staticmethod
    def _stage(in_channels, out_channels, blocks, stride):
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.variant == "lade":
            x = torch.cat([self.cb_block(x), self.rb_block(x)], dim=1)
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


def numpy_state(model):
    """state_dict as NumPy float32 copies, without num_batches_tracked."""
    return {k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_numpy_state(model, state):
    """Loads a dict of NumPy arrays (lade's state_dict) into `model`, in the
    model's dtype. Every key of the model except num_batches_tracked must be there."""
    ref = model.state_dict()
    expected = {k for k in ref if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise KeyError(f"missing {sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}")
    with torch.no_grad():
        for k, v in state.items():
            if tuple(ref[k].shape) != tuple(v.shape):
                raise ValueError(f"{k}: shape {v.shape}, model has {tuple(ref[k].shape)}")
            ref[k].copy_(torch.from_numpy(np.array(v)))
    return model
