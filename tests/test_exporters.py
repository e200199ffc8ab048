"""Models as PyTorch exports them: TorchScript and dynamo exporters, opsets 11 to 21, BatchNorm
folded into the convs or kept, dynamic or fixed batch. Each must prune into a valid model with
the same interface, with its residual, depthwise and concatenated channels recognised."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import onnxprune
from builders import run

nn = torch.nn


class Block(nn.Module):
    """A residual block whose first conv is followed by a depthwise conv, plus a concatenated side path."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * c)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.conv2 = nn.Conv2d(2 * c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = nn.functional.relu6(self.bn1(self.conv1(x)))
        y = nn.functional.relu6(self.bn2(self.dw(y)))
        return torch.relu(self.bn3(self.conv2(y)) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.side = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = torch.cat([x, self.side(x)], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them matters
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return net.eval()


def _export(net: nn.Module, *, dynamo: bool, opset: int, keep_bn: bool, dynamic: bool) -> onnx.ModelProto:
    x = torch.randn(2, 3, 12, 12)
    buffer = io.BytesIO()
    kwargs = {"input_names": ["input"], "output_names": ["logits"], "opset_version": opset}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},) if dynamic else None
        kwargs["optimize"] = not keep_bn
    else:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
        kwargs["do_constant_folding"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, dynamo=dynamo, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


CASES = [
    # (exporter, opset, BatchNorm kept, dynamic batch)
    ("torchscript", 11, True, True),
    ("torchscript", 13, False, True),
    ("torchscript", 17, True, False),
    ("torchscript", 20, False, True),
    ("dynamo", 18, True, True),
    ("dynamo", 21, False, False),
]


@pytest.mark.parametrize("exporter, opset, keep_bn, dynamic", CASES)
def test_exported_models_prune(exporter, opset, keep_bn, dynamic):
    net = _net()
    try:
        model = _export(net, dynamo=exporter == "dynamo", opset=opset, keep_bn=keep_bn, dynamic=dynamic)
    except Exception as exc:  # an exporter that cannot run here is a broken environment, not a pass
        pytest.fail(f"{exporter} export at opset {opset} failed: {exc}")
    batch = 2 if not dynamic else 16
    x = np.random.default_rng(0).standard_normal((batch, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-3, atol=1e-4)

    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=8.0)
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == ["input"] and [o.name for o in pruned.graph.output] == ["logits"]
    assert run(pruned, x).shape == expected.shape
    # Only the stem reads the graph input; every other layer's channels are tracked through the
    # residual Adds, depthwise convs, the Concat and the Flatten, whatever the exporter emitted.
    frozen = [layer.name for layer in report.layers if layer.frozen]
    assert len(frozen) == 1, [(layer.name, layer.frozen) for layer in report.layers]
    assert report.params_after < report.params_before
