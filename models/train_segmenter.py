"""Train the bundled shapes segmenter (a U-Net), export ``pyconv/models/shapes_unet.onnx``.

Usage::

    python models/train_segmenter.py [--epochs 6] [--out pyconv/models/shapes_unet.onnx]

An encoder-decoder with skip connections: the encoder downsamples with max pooling and a
strided convolution, a dilated bottleneck widens the receptive field to the whole image
(needed to tell the shape classes apart), and the decoder upsamples with transposed
convolutions and concatenates the encoder features at each scale. Output: per-pixel
logits over ``shapes.NUM_CLASSES + 1`` classes (0 = background). Trained with PyTorch
(dev-only) on fresh ``shapes.make_segmentation`` images every epoch (seeds 2000 + epoch),
never on the evaluation seed. Fixed seeds and thread count make the run reproducible.
"""
import argparse
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BUNDLED_DIR, Timer, export_onnx, seed_everything  # noqa: E402
from pyconv.models import shapes  # noqa: E402  (the checkout's, see _common)

TRAIN_SEED = 2000       # epoch e trains on make_segmentation(n, TRAIN_SEED + e)
VAL_SEED = 1999         # held-out images for the training log (evaluate.py uses another)


def conv_bn_relu(c_in, c_out, k=3, stride=1, dilation=1):
    """Conv (no bias: BN follows) + BatchNorm + ReLU, 'same'-style padding."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def up_bn_relu(c_in, c_out, k, padding):
    """Transposed conv, stride 2 (doubles H and W) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=padding, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ShapesUNet(nn.Module):
    """3 x H x W image (H, W multiples of 8) -> (NUM_CLASSES + 1) x H x W logits."""

    def __init__(self, num_classes=shapes.NUM_CLASSES + 1, w=(16, 32, 48, 64)):
        super().__init__()
        c1, c2, c3, c4 = w
        self.enc1 = nn.Sequential(conv_bn_relu(3, c1), conv_bn_relu(c1, c1))        # H
        self.pool1 = nn.MaxPool2d(2)                                                  # H/2
        self.enc2 = nn.Sequential(conv_bn_relu(c1, c2), conv_bn_relu(c2, c2))
        self.enc3 = nn.Sequential(conv_bn_relu(c2, c3, stride=2),                    # H/4
                                  conv_bn_relu(c3, c3))
        self.pool3 = nn.MaxPool2d(2)                                                  # H/8
        self.bottleneck = nn.Sequential(conv_bn_relu(c3, c4, dilation=2),
                                        conv_bn_relu(c4, c4, dilation=4))
        self.up3 = up_bn_relu(c4, c3, k=4, padding=1)                                 # H/4
        self.dec3 = conv_bn_relu(2 * c3, c3)
        self.up2 = up_bn_relu(c3, c2, k=2, padding=0)                                 # H/2
        self.dec2 = conv_bn_relu(2 * c2, c2)
        self.up1 = up_bn_relu(c2, c1, k=2, padding=0)                                 # H
        self.dec1 = conv_bn_relu(2 * c1, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x):
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool1(s1))
        s3 = self.enc3(s2)
        b = self.bottleneck(self.pool3(s3))
        d3 = self.dec3(torch.cat([self.up3(b), s3], 1))        # skip concatenations
        d2 = self.dec2(torch.cat([self.up2(d3), s2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], 1))
        return self.head(d1)


def evaluate(net, images, masks, batch=250):
    """Dataset-level mean IoU (``shapes.mean_iou``) of the argmax prediction."""
    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            preds.append(net(torch.from_numpy(images[i:i + batch])).argmax(1).numpy())
    return shapes.mean_iou(np.concatenate(preds), masks)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--per-epoch", type=int, default=3200, help="fresh images per epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(BUNDLED_DIR, "shapes_unet.onnx"))
    args = ap.parse_args(argv)

    seed_everything(0, args.threads)
    net = ShapesUNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (args.per_epoch // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    val_x, val_m = shapes.make_segmentation(500, VAL_SEED)
    clock = Timer()
    for epoch in range(args.epochs):
        x, m = shapes.make_segmentation(args.per_epoch, TRAIN_SEED + epoch)
        x, m = torch.from_numpy(x), torch.from_numpy(m)
        order = torch.randperm(len(x))
        net.train()
        total = 0.0
        for i in range(args.per_epoch // args.batch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            loss = loss_fn(net(x[idx]), m[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        miou = evaluate(net, val_x, val_m)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / (i + 1):.4f}  "
              f"val mIoU {miou:.4f}  {clock():.0f} s", flush=True)

    net.eval()
    export_onnx(net, args.out, torch.from_numpy(val_x[:2]), "input", "logits", __file__)
    print(f"training + export: {clock():.0f} s")


if __name__ == "__main__":
    main()
