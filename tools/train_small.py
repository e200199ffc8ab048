"""Train a small model with PyTorch (CPU) and export it to ONNX: more reference models for
calibrations that need real accuracy (docs/fidelity.md).

- ``mlp_mnist``: 784-256-128-10 with ReLU, Gemm layers only (about 30 s per epoch here).
- ``resnet8_cifar10``: a small residual CNN (BatchNorm, residual Adds, global average pool), less
  accurate and less confident than the shared models (about 8 minutes per epoch on a busy 2-core
  machine).

Deterministic for a given seed on one machine.

    python tools/train_small.py --arch mlp_mnist --out /tmp/mlp_mnist.onnx --epochs 2
    python tools/train_small.py --arch resnet8_cifar10 --out /tmp/resnet8_cifar10.onnx --epochs 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import cifar10, mnist  # noqa: E402


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet8(nn.Module):
    """conv 3->16, three residual blocks (16, 32 /2, 64 /2), global average pool, fc 64->10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                    nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


ARCHITECTURES = {"mlp_mnist": (MLP, mnist), "resnet8_cifar10": (ResNet8, cifar10)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHITECTURES), default="mlp_mnist")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    build, load = ARCHITECTURES[args.arch]
    x, y = load("train")
    x_test, y_test = load("test")
    net = build()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = args.epochs * (len(x) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=4e-3, total_steps=steps)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        started, net = time.perf_counter(), net.train()
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 127, 128):
            batch = torch.from_numpy(x[order[i:i + 128]])
            if args.arch != "mlp_mnist" and rng.random() < 0.5:  # horizontal flips (not for digits)
                batch = torch.flip(batch, dims=[3])
            loss = nn.functional.cross_entropy(net(batch), torch.from_numpy(y[order[i:i + 128]]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(torch.from_numpy(x_test[j:j + 1000])).argmax(1).numpy() == y_test[j:j + 1000]).sum())
                          for j in range(0, len(x_test), 1000))
        print(f"epoch {epoch + 1}: test top-1 {correct / len(x_test):.2%} ({time.perf_counter() - started:.0f}s)",
              flush=True)
    torch.onnx.export(net.eval(), (torch.from_numpy(x[:1]),), str(args.out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
