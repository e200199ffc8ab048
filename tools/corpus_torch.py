"""The PyTorch half of the corpus (tools/corpus_models.py): torchvision's public architectures with
random weights, and small hand-written models in the styles exporters produce (a YOLO-style
detector with a DFL head, a DBNet-style text detector, a CRNN with a BiLSTM, an NHWC graph, ...).
"""

from __future__ import annotations

import sys


def import_torchvision():
    import torch
    try:
        import torchvision
        return torchvision
    except Exception:  # noqa: BLE001 - the C extension of a CUDA wheel does not load on CPU torch
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision.lib = lib
        import torchvision
        return torchvision


def randomise(model, seed: int):
    import torch
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
    return model.eval()


def torch_models():
    """name -> (factory, input shape (batch 1), dynamic dims {axis: name}, export input shape, opset, note)."""
    import torch
    from torch import nn

    def conv_bn(c1, c2, k=3, s=1, act=nn.SiLU, groups=1):
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2), act())

    # --- YOLO-style detector (YOLOv8-like: C2f, SPPF, Upsample+Concat neck, DFL head) ---
    class Bottleneck(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.cv1, self.cv2 = conv_bn(c, c), conv_bn(c, c)

        def forward(self, x):
            return x + self.cv2(self.cv1(x))

    class C2f(nn.Module):
        def __init__(self, c1, c2, n=1):
            super().__init__()
            self.c = c2 // 2
            self.cv1 = conv_bn(c1, 2 * self.c, 1)
            self.cv2 = conv_bn((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            c = c1 // 2
            self.cv1, self.cv2 = conv_bn(c1, c, 1), conv_bn(c * 4, c2, 1)
            self.m = nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.m(x)
            y2 = self.m(y1)
            return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))

    class DFL(nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class YoloLike(nn.Module):
        def __init__(self, nc=8, reg_max=16):
            super().__init__()
            self.nc, self.reg = nc, reg_max
            self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), C2f(32, 32))
            self.p3 = nn.Sequential(conv_bn(32, 64, 3, 2), C2f(64, 64))
            self.p4 = nn.Sequential(conv_bn(64, 128, 3, 2), C2f(128, 128), SPPF(128, 128))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.n3 = C2f(192, 64)
            self.down = conv_bn(64, 64, 3, 2)
            self.n4 = C2f(192, 128)
            self.box = nn.ModuleList(nn.Sequential(conv_bn(c, 32), conv_bn(32, 32), nn.Conv2d(32, 4 * reg_max, 1))
                                     for c in (64, 128))
            self.cls = nn.ModuleList(nn.Sequential(conv_bn(c, 32), conv_bn(32, 32), nn.Conv2d(32, nc, 1))
                                     for c in (64, 128))
            self.dfl = DFL(reg_max)

        def forward(self, x):
            p3 = self.p3(self.stem(x))
            p4 = self.p4(p3)
            n3 = self.n3(torch.cat([self.up(p4), p3], 1))
            n4 = self.n4(torch.cat([self.down(n3), p4], 1))
            feats = [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((n3, n4))]
            xcat = torch.cat([f.view(1, 4 * self.reg + self.nc, -1) for f in feats], 2)
            box, cls = xcat.split((4 * self.reg, self.nc), 1)
            return torch.cat([self.dfl(box), cls.sigmoid()], 1)

    # --- DBNet-style text detector (ResNet-ish backbone, FPN, ConvTranspose head) ---
    class Basic(nn.Module):
        def __init__(self, c1, c2, s):
            super().__init__()
            self.a = conv_bn(c1, c2, 3, s, nn.ReLU)
            self.b = nn.Sequential(nn.Conv2d(c2, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2))
            self.sc = nn.Sequential(nn.Conv2d(c1, c2, 1, s, bias=False), nn.BatchNorm2d(c2))

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.sc(x))

    class DBNetLike(nn.Module):
        def __init__(self, inner=64):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 16, 3, 2, nn.ReLU), nn.MaxPool2d(3, 2, 1))
            chans = (16, 32, 64, 128)
            self.stages = nn.ModuleList(Basic(c1, c2, 1 if i == 0 else 2)
                                        for i, (c1, c2) in enumerate(zip((16,) + chans[:-1], chans)))
            self.ins = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in chans)
            self.outs = nn.ModuleList(nn.Conv2d(inner, inner // 4, 3, 1, 1, bias=False) for _ in chans)

            def head():
                return nn.Sequential(conv_bn(inner, inner // 4, 3, 1, nn.ReLU),
                                     nn.ConvTranspose2d(inner // 4, inner // 4, 2, 2), nn.BatchNorm2d(inner // 4),
                                     nn.ReLU(), nn.ConvTranspose2d(inner // 4, 1, 2, 2), nn.Sigmoid())
            self.binarize, self.thresh = head(), head()

        def forward(self, x):
            x = self.stem(x)
            feats = []
            for s in self.stages:
                x = s(x)
                feats.append(x)
            lat = [conv(f) for conv, f in zip(self.ins, feats)]
            for i in range(3, 0, -1):
                lat[i - 1] = lat[i - 1] + nn.functional.interpolate(lat[i], scale_factor=2.0, mode="nearest")
            outs = [conv(f) for conv, f in zip(self.outs, lat)]
            outs = [nn.functional.interpolate(o, scale_factor=float(2 ** i), mode="nearest") if i else o
                    for i, o in enumerate(outs)]
            fuse = torch.cat(outs[::-1], 1)
            return torch.cat([self.binarize(fuse), self.thresh(fuse)], 1)

    # --- CRNN (conv + BiLSTM), input [1, 1, 32, W], W symbolic ---
    class CRNN(nn.Module):
        def __init__(self, nclass=37, hidden=64):
            super().__init__()
            self.cnn = nn.Sequential(
                nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),          # 16 x W/2
                nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),         # 8 x W/4
                conv_bn(64, 128, 3, 1, nn.ReLU),
                nn.Conv2d(128, 128, 3, 1, 1), nn.ReLU(), nn.MaxPool2d((2, 1), (2, 1)),  # 4
                conv_bn(128, 128, 3, 1, nn.ReLU), nn.MaxPool2d((2, 1), (2, 1)),   # 2
                nn.Conv2d(128, 128, (2, 1), 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),  # 2 -> 1
            )
            self.rnn = nn.LSTM(128, hidden, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, nclass)

        def forward(self, x):
            f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [T, 1, C]
            y, _ = self.rnn(f)
            return self.fc(y)

    # --- NHWC graph as tf2onnx writes it: Transpose in, convs, Transpose out ---
    class NHWC(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, 1, 1, groups=32), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(),
                nn.Conv2d(32, 10, 1))

        def forward(self, x):
            return self.body(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    # --- small CNN whose weights end up in Constant nodes (paddle2onnx style) ---
    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(conv_bn(3, 16, 3, 2, nn.ReLU), conv_bn(16, 32, 3, 2, nn.ReLU),
                                   conv_bn(32, 64, 3, 2, nn.ReLU), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(self.f(x))

    # --- MobileNetV2-style classifier with symbolic H and W ---
    class InvRes(nn.Module):
        def __init__(self, c1, c2, s, t=4):
            super().__init__()
            h = c1 * t
            self.res = s == 1 and c1 == c2
            self.b = nn.Sequential(conv_bn(c1, h, 1, 1, nn.ReLU6), conv_bn(h, h, 3, s, nn.ReLU6, groups=h),
                                   nn.Conv2d(h, c2, 1, bias=False), nn.BatchNorm2d(c2))

        def forward(self, x):
            return x + self.b(x) if self.res else self.b(x)

    class MobileDynHW(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(conv_bn(3, 16, 3, 2, nn.ReLU6), InvRes(16, 16, 1), InvRes(16, 24, 2),
                                   InvRes(24, 24, 1), InvRes(24, 32, 2), InvRes(32, 32, 1), InvRes(32, 64, 2),
                                   conv_bn(64, 256, 1, 1, nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.f(x))

    def tv(fn, **kw):
        def make():
            return getattr(import_torchvision().models, fn)(weights=None, **kw)
        return make

    return {
        "tv_mobilenet_v3_small": (tv("mobilenet_v3_small"), (1, 3, 224, 224), {}, 13, "torchvision, opset 13"),
        "tv_shufflenet_v2_x0_5": (tv("shufflenet_v2_x0_5"), (1, 3, 224, 224), {}, 11, "torchvision, opset 11"),
        "tv_resnet50": (tv("resnet50"), (1, 3, 160, 160), {}, 17, "torchvision, opset 17, 160x160"),
        "tv_efficientnet_b0": (tv("efficientnet_b0"), (1, 3, 224, 224), {}, 18, "torchvision, opset 18"),
        "tv_regnet_y_400mf": (tv("regnet_y_400mf"), (1, 3, 224, 224), {}, 20, "torchvision, opset 20"),
        "yolo_like": (YoloLike, (1, 3, 160, 160), {}, 19, "hand-written YOLOv8-style (C2f, SPPF, DFL), opset 19"),
        "dbnet_like": (DBNetLike, (1, 3, 160, 160), {}, 16, "hand-written DBNet-style (FPN, ConvTranspose head), opset 16"),
        "crnn": (CRNN, (1, 1, 32, 100), {3: "W"}, 14, "hand-written CRNN (conv + BiLSTM), W symbolic, opset 14"),
        "nhwc_tf2onnx_like": (NHWC, (1, 64, 64, 3), {}, 13, "hand-written NHWC in/out Transposes, opset 13"),
        "const_weights": (SmallCNN, (1, 3, 64, 64), {}, 12, "hand-written, every initializer moved into a Constant node, opset 12"),
        "mobilenet_dyn_hw": (MobileDynHW, (1, 3, 96, 96), {2: "H", 3: "W"}, 15, "hand-written MobileNetV2-style, H/W symbolic, opset 15"),
    }
