"""The backbones for images beyond CIFAR against a PyTorch reference written here:
lade.ResNet18 (torchvision's layout and names, each stem) and lade.ResNet32 with
a stride-2 stem.

Same method and tolerances as tests/test_models.py: lade's weights are loaded into
the float64 reference, and logits, pooled features, the loss, every parameter
gradient and the BN running statistics after a training forward are compared
(max|lade - ref| / max|ref| <= 1e-4 per tensor; lade's own float32 rounding).
Tiny batches and images keep this cheap; the last BN still sees >= 2 values.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lade
from test_models import assert_close, lade_train_forward_backward, randomize_bn
from torch_reference import ResNet32 as TorchResNet32
from torch_reference import load_numpy_state


class TorchBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(nn.Module):
    """torchvision's ResNet-18 layout; stem_stride 1: 3x3/1, 2: 3x3/2, 4: 7x7/2 + max pool 3/2/1."""

    def __init__(self, num_classes, stem_stride):
        super().__init__()
        k = 7 if stem_stride == 4 else 3
        self.conv1 = nn.Conv2d(3, 64, k, 1 if stem_stride == 1 else 2, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1) if stem_stride == 4 else nn.Identity()
        cin = 64
        for s, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if s == 0 else 2
            setattr(self, f"layer{s + 1}", nn.Sequential(TorchBasicBlock(cin, cout, stride),
                                                         TorchBasicBlock(cout, cout, 1)))
            cin = cout
        self.fc = nn.Linear(512, num_classes)

    def features(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


def lade_and_torch18(rng, stem_stride, num_classes=10, seed=0):
    net = lade.ResNet18(num_classes=num_classes, seed=seed, stem_stride=stem_stride)
    randomize_bn(net, rng)
    ref = TorchResNet18(num_classes, stem_stride).double()
    load_numpy_state(ref, net.state_dict())
    return net, ref


def lade_and_torch32_stride2(rng, variant, num_classes=10):
    net = lade.ResNet32(num_classes=num_classes, variant=variant, seed=1, stem_stride=2)
    randomize_bn(net, rng)
    ref = TorchResNet32(num_classes, variant)
    ref.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
    ref = ref.double()
    load_numpy_state(ref, net.state_dict())
    return net, ref


def compare_training_forward_backward(net, ref, rng, n, side, num_classes=10):
    images = rng.standard_normal((n, 3, side, side)).astype(np.float32)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    ref.train()
    ref.zero_grad()
    features = ref.features(torch.from_numpy(images).double())
    ref_logits = ref.fc(features)
    ref_loss = F.cross_entropy(ref_logits, torch.from_numpy(labels))
    ref_loss.backward()
    logits, loss = lade_train_forward_backward(net, images, labels)
    assert_close(logits, ref_logits, 1e-4, "train logits")
    assert_close(net.features, features, 1e-4, "pooled features")
    assert abs(loss - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    ref_params = dict(ref.named_parameters())
    assert list(net.gradients()) == list(ref_params), "parameter order differs from PyTorch's named_parameters"
    for name, grad in net.gradients().items():
        assert_close(grad, ref_params[name].grad, 1e-4, f"gradient of {name}")
    ref_state = ref.state_dict()
    for name, value in net.running_stats().items():
        assert_close(value, ref_state[name], 1e-4, f"{name} after a train forward")
    # eval mode with the updated running statistics
    ref.eval()
    with torch.no_grad():
        expected = ref.fc(ref.features(torch.from_numpy(images).double()))
    assert_close(net.forward(images, train=False), expected, 1e-4, "eval logits")


def test_resnet18_names_shapes_and_count_match_torchvision_layout():
    net = lade.ResNet18(num_classes=10, stem_stride=4)
    ref = TorchResNet18(10, 4)
    ref_state = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in net.state_dict().items()} == ref_state
    assert net.num_params == sum(p.numel() for p in ref.parameters()) == 11_181_642  # torchvision resnet18(10)
    assert net.feature_dim == 512
    assert "layer2.0.downsample.0.weight" in ref_state and "layer1.0.downsample.0.weight" not in ref_state
    assert lade.ResNet18(10, stem_stride=1).parameters()["conv1.weight"].shape == (64, 3, 3, 3)


@pytest.mark.parametrize("stem_stride,n,side", [(1, 2, 16), (2, 2, 32), (4, 2, 64)])
def test_resnet18_training_forward_backward_match_torch(rng, stem_stride, n, side):
    net, ref = lade_and_torch18(rng, stem_stride)
    compare_training_forward_backward(net, ref, rng, n, side)


def test_resnet18_odd_image_size_matches_torch(rng):
    # 7x7/2 stem, pool and stride-2 stages on a 45-pixel side: every size rounds up (45, 23, 12, 12, 6, 3, 2)
    net, ref = lade_and_torch18(rng, 4)
    compare_training_forward_backward(net, ref, rng, 2, 45)


@pytest.mark.parametrize("variant", ["lade", "classic"])
def test_resnet32_stride2_stem_matches_torch(rng, variant):
    net, ref = lade_and_torch32_stride2(rng, variant)
    compare_training_forward_backward(net, ref, rng, 4, 16)


def test_resnet32_default_stem_is_unchanged():
    a, b = lade.ResNet32(10, seed=3), lade.ResNet32(10, seed=3, stem_stride=1)
    assert np.array_equal(a.params, b.params)
    assert a.parameters()["conv1.weight"].shape == (16, 3, 3, 3)


def test_resnet18_finite_differences(rng):
    """A few weights (stem, a projection shortcut, a last-stage conv, the classifier) against
    central differences of lade's own loss, in float64 sums over float32 logits."""
    net = lade.ResNet18(num_classes=5, seed=4, stem_stride=2)
    images = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    labels = np.array([0, 3, 4], np.int64)
    lade_train_forward_backward(net, images, labels)
    grads = {k: v.copy() for k, v in net.gradients().items()}
    params = net.parameters()
    for name, index in [("conv1.weight", (5, 1, 0, 2)), ("layer3.0.downsample.0.weight", (7, 11, 0, 0)),
                        ("layer4.1.conv2.weight", (100, 31, 1, 1)), ("fc.weight", (2, 17))]:
        saved = params[name][index]
        losses = []
        for step in (1e-3, -1e-3):
            params[name][index] = saved + step
            logits = net.forward(images, train=True, defer_running_stats=True)
            losses.append(lade.losses.softmax_ce(logits, labels)[0])
        params[name][index] = saved
        fd = (losses[0] - losses[1]) / 2e-3
        assert abs(grads[name][index] - fd) <= 2e-3 + 0.05 * abs(fd), f"{name}{index}: {grads[name][index]} vs {fd}"


def test_bad_stem_and_small_batch_are_refused(rng):
    with pytest.raises(ValueError, match="lade.ResNet18: argument 'stem_stride'"):
        lade.ResNet18(10, stem_stride=3)
    with pytest.raises(ValueError, match="lade.ResNet32: argument 'stem_stride'"):
        lade.ResNet32(10, stem_stride=8)
    net = lade.ResNet18(10, stem_stride=4)
    with pytest.raises(ValueError, match="more than one value per channel"):
        net.forward(np.zeros((1, 3, 32, 32), np.float32), train=True)  # layer4 is 1x1: one value per channel
