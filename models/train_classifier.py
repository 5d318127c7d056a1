"""Train the bundled shapes classifier, export ``pyconv/models/shapes_classifier.onnx``.

Usage::

    python models/train_classifier.py [--epochs 8] [--out pyconv/models/shapes_classifier.onnx]

A small CNN (about 75 k parameters) that exercises the convolution variants pyconv
implements: strided, dilated, depthwise, grouped and pointwise convolutions, max pooling
and global average pooling, each conv followed by BatchNorm + ReLU. Trained with PyTorch
(dev-only) on freshly generated images every epoch (``shapes.make_classification``,
seeds 1000 + epoch), so it never sees the evaluation seed (see
``pyconv/models/evaluate.py``).
Fixed seeds and thread count make the run reproducible.
"""
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BUNDLED_DIR, Timer, export_onnx, seed_everything  # noqa: E402
from pyconv.models import shapes  # noqa: E402  (the checkout's, see _common)

TRAIN_SEED = 1000       # epoch e trains on make_classification(n, TRAIN_SEED + e)
VAL_SEED = 999          # held-out images for the training log (evaluate.py uses another)


def conv_bn_relu(c_in, c_out, k=3, stride=1, dilation=1, groups=1):
    """Conv (no bias: BN follows) + BatchNorm + ReLU, 'same'-style padding."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ShapesClassifier(nn.Module):
    """3 x 64 x 64 image -> logits over ``shapes.NUM_CLASSES`` classes."""

    def __init__(self, num_classes=shapes.NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16, stride=2),                  # 16 x 32 x 32  strided stem
            conv_bn_relu(16, 32, dilation=2),               # 32 x 32 x 32  dilated
            nn.MaxPool2d(2),                                # 32 x 16 x 16
            conv_bn_relu(32, 32, groups=32),                # depthwise 3x3
            conv_bn_relu(32, 64, k=1),                      # pointwise 1x1
            conv_bn_relu(64, 64, stride=2, groups=4),       # 64 x 8 x 8   grouped + strided
            conv_bn_relu(64, 96, dilation=2),               # 96 x 8 x 8   dilated
        )
        self.pool = nn.AdaptiveAvgPool2d(1)                 # -> GlobalAveragePool
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(96, num_classes)                # -> Gemm

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def evaluate(net, images, labels, batch=500):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            pred = net(torch.from_numpy(images[i:i + batch])).argmax(1).numpy()
            correct += int((pred == labels[i:i + batch]).sum())
    return correct / len(images)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-epoch", type=int, default=8000, help="fresh images per epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(BUNDLED_DIR, "shapes_classifier.onnx"))
    args = ap.parse_args(argv)

    seed_everything(0, args.threads)
    net = ShapesClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (args.per_epoch // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    val_x, val_y = shapes.make_classification(2000, VAL_SEED)
    clock = Timer()
    for epoch in range(args.epochs):
        x, y = shapes.make_classification(args.per_epoch, TRAIN_SEED + epoch)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        order = torch.randperm(len(x))
        net.train()
        total = 0.0
        for i in range(args.per_epoch // args.batch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(net, val_x, val_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / (i + 1):.4f}  "
              f"val acc {acc:.4f}  {clock():.0f} s", flush=True)

    net.eval()
    export_onnx(net, args.out, torch.from_numpy(val_x[:2]), "input", "logits", __file__)
    print(f"training + export: {clock():.0f} s")


if __name__ == "__main__":
    main()
