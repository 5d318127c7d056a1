"""Exports the real-model zoo: common CNN architectures with seeded random weights.

    pip install torch==2.13.0 timm segmentation-models-pytorch onnxscript   # generation only
    python benchmarks/zoo/export.py                      # every model not yet exported
    python benchmarks/zoo/export.py --list
    python benchmarks/zoo/export.py --models resnet18 unet_resnet18 --force
    python benchmarks/zoo/export.py --out /tmp/zoo       # default: $PYCONV_ZOO or ~/.cache/pyconv/zoo

Architectures come from timm (classifiers of every family), segmentation-models-pytorch
(encoder-decoders), torchvision's segmentation heads (LR-ASPP, DeepLabV3-MobileNetV3) and a
few nets defined here (3-D video, 1-D TCN, PixelShuffle super-resolution, max-unpool SegNet).
Weights: the libraries' own random initialisation under a fixed seed. Norm layers: random
affine parameters; BatchNorm statistics from one training-mode pass on random data
(momentum 1), so each layer holds the statistics of its real input, then mildly perturbed:
no BatchNorm is the identity a fresh model would have, and activations stay in a sane
range through deep stacks (see randomize_norms).

Exporters alternate by position in the list: even -> TorchScript (`dynamo=False`), odd ->
`dynamo=True`. A model whose dynamo export fails falls back to TorchScript and the manifest
records why. Models are exported one at a time on one torch thread; one that fails is
reported and the rest go on. The manifest (`manifest.json` in the output folder) is
rewritten after every model.

torch, torchvision, timm and segmentation-models-pytorch are generation-time tools only:
nothing in pyconv, its tests or CI imports them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEFAULT_OUT = os.environ.get("PYCONV_ZOO", os.path.join(os.path.expanduser("~"), ".cache",
                                                         "pyconv", "zoo"))
SEED = 0
CLS = (1, 3, 128, 128)
CLS160 = (1, 3, 160, 160)
SEG = (1, 3, 128, 128)

# (name, family, source, builder argument, input shape)
MODELS = [
    ("resnet18", "ResNet", "timm", "resnet18", CLS),
    ("resnet50", "ResNet", "timm", "resnet50", CLS),
    ("resnext50_32x4d", "ResNeXt", "timm", "resnext50_32x4d", CLS),
    ("resnet34d", "ResNet", "timm", "resnet34d", CLS),
    ("seresnext26d_32x4d", "ResNeXt", "timm", "seresnext26d_32x4d", CLS),
    ("res2net50_14w_8s", "Res2Net", "timm", "res2net50_14w_8s", CLS),
    ("mobilenetv2_100", "MobileNetV2", "timm", "mobilenetv2_100", CLS160),
    ("mobilenetv3_large_100", "MobileNetV3", "timm", "mobilenetv3_large_100", CLS160),
    ("mobilenetv3_small_100", "MobileNetV3", "timm", "mobilenetv3_small_100", CLS160),
    ("mobilenetv4_conv_small", "MobileNetV4", "timm", "mobilenetv4_conv_small", CLS160),
    ("efficientnet_b0", "EfficientNet", "timm", "efficientnet_b0", CLS160),
    ("tf_efficientnet_lite0", "EfficientNet", "timm", "tf_efficientnet_lite0", CLS160),
    ("efficientnetv2_rw_t", "EfficientNet", "timm", "efficientnetv2_rw_t", CLS160),
    ("tinynet_a", "EfficientNet", "timm", "tinynet_a", CLS160),
    ("regnetx_002", "RegNet", "timm", "regnetx_002", CLS),
    ("regnety_004", "RegNet", "timm", "regnety_004", CLS),
    ("ghostnet_100", "GhostNet", "timm", "ghostnet_100", CLS160),
    ("ghostnetv2_100", "GhostNet", "timm", "ghostnetv2_100", CLS160),
    ("convnext_atto", "ConvNeXt", "timm", "convnext_atto", CLS),
    ("densenet121", "DenseNet", "timm", "densenet121", CLS),
    ("inception_v3", "Inception", "timm", "inception_v3", CLS160),
    ("xception41", "Inception", "timm", "xception41", CLS),
    ("repvgg_a0", "RepVGG", "timm", "repvgg_a0", CLS),
    ("dla34", "DLA", "timm", "dla34", CLS),
    ("hrnet_w18_small", "HRNet", "timm", "hrnet_w18_small", CLS),
    ("cspresnet50", "CSP", "timm", "cspresnet50", CLS),
    ("cspdarknet53", "CSP", "timm", "cspdarknet53", CLS),
    ("darknet53", "CSP", "timm", "darknet53", CLS),
    ("rexnet_100", "RexNet", "timm", "rexnet_100", CLS160),
    ("mixnet_s", "MixNet", "timm", "mixnet_s", CLS160),
    ("mnasnet_100", "MNASNet", "timm", "mnasnet_100", CLS160),
    ("lcnet_050", "LCNet", "timm", "lcnet_050", CLS160),
    ("dpn68", "DPN", "timm", "dpn68", CLS),
    ("vgg11_bn", "VGG", "timm", "vgg11_bn", CLS),
    ("selecsls42b", "SelecSLS", "timm", "selecsls42b", CLS),
    ("unet_resnet18", "U-Net", "smp", ("Unet", "resnet18"), SEG),
    ("unet_mobilenet_v2", "U-Net", "smp", ("Unet", "mobilenet_v2"), SEG),
    ("unetplusplus_resnet18", "U-Net++", "smp", ("UnetPlusPlus", "resnet18"), SEG),
    ("fpn_resnet34", "FPN", "smp", ("FPN", "resnet34"), SEG),
    ("deeplabv3_resnet18", "DeepLabV3", "smp", ("DeepLabV3", "resnet18"), SEG),
    ("deeplabv3plus_resnet18", "DeepLabV3+", "smp", ("DeepLabV3Plus", "resnet18"), SEG),
    ("pspnet_resnet18", "PSPNet", "smp", ("PSPNet", "resnet18"), SEG),
    ("linknet_resnet18", "LinkNet", "smp", ("Linknet", "resnet18"), SEG),
    ("manet_resnet18", "MA-Net", "smp", ("MAnet", "resnet18"), SEG),
    ("pan_resnet18", "PAN", "smp", ("PAN", "resnet18"), SEG),
    ("lraspp_mobilenet_v3_large", "LR-ASPP", "torchvision", "lraspp_mobilenet_v3_large", CLS160),
    ("deeplabv3_mobilenet_v3_large", "DeepLabV3", "torchvision",
     "deeplabv3_mobilenet_v3_large", CLS160),
    ("shufflenet_v2_x1_0", "ShuffleNet", "torchvision", "shufflenet_v2_x1_0", CLS),
    ("squeezenet1_1", "SqueezeNet", "torchvision", "squeezenet1_1", CLS),
    ("r2plus1d_small", "Video 3-D", "local", "R2Plus1D", (1, 3, 8, 56, 56)),
    ("c3d_small", "Video 3-D", "local", "C3D", (1, 3, 8, 56, 56)),
    ("tcn_1d", "TCN 1-D", "local", "TCN", (1, 16, 1024)),
    ("espcn_x3", "Super-resolution", "local", "ESPCN", (1, 3, 96, 96)),
    ("segnet_unpool", "SegNet", "local", "SegNet", SEG),
]


_TORCHVISION_STUB = None     # held for the process: a dropped Library undefines its ops


def _stub_torchvision_ops():
    """PyPI's torchvision is a CUDA build whose C++ ops do not load beside torch's CPU
    build; its import then fails on registering fake kernels for two ops it never
    defined. Defining their schemas first lets the pure-Python parts (models, layers)
    import; no exported model calls them."""
    import torch
    global _TORCHVISION_STUB
    try:
        torch.ops.torchvision.nms
        return
    except (AttributeError, RuntimeError):
        pass
    _TORCHVISION_STUB = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_STUB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_STUB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _local_nets():
    import torch
    from torch import nn

    def conv_bn_relu(conv, ch):
        bn = nn.BatchNorm3d(ch) if isinstance(conv, nn.Conv3d) else nn.BatchNorm2d(ch)
        return nn.Sequential(conv, bn, nn.ReLU(inplace=True))

    class R2Plus1D(nn.Module):
        """(2+1)-D factorised 3-D convolutions: 1xkxk spatial then kx1x1 temporal."""

        def __init__(self, widths=(32, 64, 128), classes=10):
            super().__init__()
            layers, cin = [], 3
            for i, w in enumerate(widths):
                stride = (1, 2, 2) if i == 0 else (2, 2, 2)
                mid = (cin + w) // 2
                layers += [conv_bn_relu(nn.Conv3d(cin, mid, (1, 3, 3), (1,) + stride[1:],
                                                  (0, 1, 1), bias=False), mid),
                           conv_bn_relu(nn.Conv3d(mid, w, (3, 1, 1), (stride[0], 1, 1),
                                                  (1, 0, 0), bias=False), w)]
                cin = w
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    class C3D(nn.Module):
        """Plain 3x3x3 convolutions with 3-D max pooling."""

        def __init__(self, classes=10):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn_relu(nn.Conv3d(3, 32, 3, padding=1, bias=False), 32),
                nn.MaxPool3d((1, 2, 2)),
                conv_bn_relu(nn.Conv3d(32, 64, 3, padding=1, bias=False), 64),
                nn.MaxPool3d(2),
                conv_bn_relu(nn.Conv3d(64, 128, 3, padding=1, bias=False), 128),
                nn.MaxPool3d(2))
            self.fc = nn.Linear(128, classes)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool3d(
                self.features(x), 1), 1))

    class TCN(nn.Module):
        """Temporal convolutional network: residual blocks of dilated causal Conv1d (left
        padding by Pad then an unpadded conv, as causal TCNs are written)."""

        def __init__(self, cin=16, width=64, levels=6, k=3, classes=10):
            super().__init__()
            self.blocks = nn.ModuleList()
            c = cin
            for i in range(levels):
                d = 2 ** i
                self.blocks.append(nn.ModuleDict({
                    "c1": nn.Conv1d(c, width, k, dilation=d),
                    "bn1": nn.BatchNorm1d(width),
                    "c2": nn.Conv1d(width, width, k, dilation=d),
                    "bn2": nn.BatchNorm1d(width),
                    "down": nn.Conv1d(c, width, 1) if c != width else nn.Identity()}))
                c = width
            self.k = k
            self.head = nn.Conv1d(width, classes, 1)

        def forward(self, x):
            for i, b in enumerate(self.blocks):
                pad = (self.k - 1) * 2 ** i
                y = torch.relu(b["bn1"](b["c1"](nn.functional.pad(x, (pad, 0)))))
                y = torch.relu(b["bn2"](b["c2"](nn.functional.pad(y, (pad, 0)))))
                x = torch.relu(y + b["down"](x))
            return self.head(x)

    class ESPCN(nn.Module):
        """Efficient sub-pixel CNN: tanh convs, then PixelShuffle (DepthToSpace)."""

        def __init__(self, scale=3, c=3):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, 64, 5, padding=2), nn.Tanh(),
                                      nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
                                      nn.Conv2d(32, c * scale * scale, 3, padding=1))
            self.shuffle = nn.PixelShuffle(scale)

        def forward(self, x):
            return torch.sigmoid(self.shuffle(self.body(x)))

    class SegNet(nn.Module):
        """Encoder with max_pool2d(return_indices) and a decoder with max_unpool2d."""

        def __init__(self, widths=(32, 64, 128), classes=5):
            super().__init__()
            self.enc, self.dec = nn.ModuleList(), nn.ModuleList()
            cin = 3
            for w in widths:
                self.enc.append(nn.Sequential(
                    conv_bn_relu(nn.Conv2d(cin, w, 3, padding=1, bias=False), w),
                    conv_bn_relu(nn.Conv2d(w, w, 3, padding=1, bias=False), w)))
                cin = w
            for w, wout in zip(widths[::-1], list(widths[::-1][1:]) + [widths[0]]):
                self.dec.append(nn.Sequential(
                    conv_bn_relu(nn.Conv2d(w, w, 3, padding=1, bias=False), w),
                    conv_bn_relu(nn.Conv2d(w, wout, 3, padding=1, bias=False), wout)))
            self.head = nn.Conv2d(widths[0], classes, 1)

        def forward(self, x):
            idx = []
            for e in self.enc:
                x, i = nn.functional.max_pool2d(e(x), 2, 2, return_indices=True)
                idx.append(i)
            for d, i in zip(self.dec, idx[::-1]):
                x = d(nn.functional.max_unpool2d(x, i, 2, 2))
            return self.head(x)

    return {"R2Plus1D": R2Plus1D, "C3D": C3D, "TCN": TCN, "ESPCN": ESPCN, "SegNet": SegNet}


def _OutputOnly(inner):  # noqa: N802 - wraps like a class; torch is imported lazily
    """torchvision's segmentation heads return {"out": ...}: export that tensor only."""
    import torch

    class OutputOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)["out"]
    return OutputOnly()


def build(source, arg):
    if source == "timm":
        _stub_torchvision_ops()
        import timm
        return timm.create_model(arg, pretrained=False)
    if source == "smp":
        _stub_torchvision_ops()
        import segmentation_models_pytorch as smp
        arch, encoder = arg
        return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=5)
    if source == "torchvision":
        _stub_torchvision_ops()
        import torchvision
        if arg.startswith(("lraspp", "deeplab")):
            fn = getattr(torchvision.models.segmentation, arg)
            return _OutputOnly(fn(weights=None, weights_backbone=None, num_classes=5))
        return getattr(torchvision.models, arg)(weights=None)
    if source == "local":
        return _local_nets()[arg]()
    raise ValueError(f"unknown source {source!r}")


def randomize_norms(model, shape, seed):
    """Random affine parameters for every norm layer, then real-input statistics for every
    BatchNorm (one training-mode pass at momentum 1 on random data, so each layer sees the
    input the layers before it give in eval mode), then mild random perturbations of those
    statistics. In that order the activations stay near unit scale through deep stacks:
    perturbing the statistics strongly, or the affine parameters after calibrating, lets
    errors compound layer by layer (EfficientNetV2 outputs of 1e4, on which onnxruntime
    disagrees with itself by 37% between its optimisation levels)."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed + 1)
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, norms) and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.6, 1.4, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn((4,) + tuple(shape[1:]), generator=g))   # batch 4: 1x1 maps too
    model.eval()
    with torch.no_grad():
        for m in bns:
            m.momentum = 0.1
            std = m.running_var.clamp_min(1e-5).sqrt()
            m.running_mean += 0.05 * std * torch.randn(m.num_features, generator=g)
            m.running_var *= torch.empty(m.num_features).uniform_(0.9, 1.1, generator=g)


def export_one(entry, index, out_dir):
    """Exports one model; returns its manifest record (raises when both exporters fail)."""
    import torch
    name, family, source, arg, shape = entry
    torch.manual_seed(SEED + index)
    model = build(source, arg)
    randomize_norms(model, shape, SEED + index)
    model.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 1000 + index))
    path = os.path.join(out_dir, name + ".onnx")
    exporter = "dynamo" if index % 2 else "torchscript"
    record = {"name": name, "family": family, "source": source, "file": name + ".onnx",
              "inputs": [{"name": "input", "shape": list(shape)}], "seed": SEED + index}
    fallback = None
    if exporter == "dynamo":
        try:
            with torch.no_grad():
                torch.onnx.export(model, (x,), path, dynamo=True, input_names=["input"],
                                  output_names=["output"], external_data=False,
                                  verbose=False)
        except Exception as e:        # noqa: BLE001 - recorded, then TorchScript tried
            fallback = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
            exporter = "torchscript"
    if exporter == "torchscript":
        with torch.no_grad():
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"],
                              output_names=["output"], opset_version=17)
    import onnx
    m = onnx.load(path, load_external_data=False)
    record.update(exporter=exporter, opset=max(o.version for o in m.opset_import
                                                if o.domain in ("", "ai.onnx")),
                  nodes=len(m.graph.node), params=int(sum(p.numel() for p in model.parameters())))
    if fallback:
        record["dynamo_failed"] = fallback
    record["inputs"][0]["name"] = m.graph.input[0].name
    return record


def load_manifest(out_dir):
    path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"models": []}


def save_manifest(out_dir, manifest):
    path = os.path.join(out_dir, "manifest.json")
    order = {m[0]: i for i, m in enumerate(MODELS)}
    manifest["models"].sort(key=lambda r: order.get(r["name"], len(order)))
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--models", nargs="+", help="names to export (default: all)")
    ap.add_argument("--force", action="store_true", help="re-export existing models")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    args = ap.parse_args(argv)
    if args.list:
        for i, (name, family, source, _, shape) in enumerate(MODELS):
            print(f"{name:<30} {family:<16} {source:<12} {'x'.join(map(str, shape)):<14} "
                  f"{'dynamo' if i % 2 else 'torchscript'}")
        return 0
    os.makedirs(args.out, exist_ok=True)
    import torch
    torch.set_num_threads(1)          # the machine is shared: export on one core
    names = args.models or [m[0] for m in MODELS]
    unknown = sorted(set(names) - {m[0] for m in MODELS})
    if unknown:
        ap.error(f"unknown models {unknown}; see --list")
    manifest = load_manifest(args.out)
    done = {r["name"] for r in manifest["models"]}
    failures = []
    for name in names:
        if name in done and not args.force and os.path.exists(
                os.path.join(args.out, name + ".onnx")):
            continue
        t0 = time.time()
        index = next(i for i, m in enumerate(MODELS) if m[0] == name)
        try:
            record = export_one(MODELS[index], index, args.out)
        except Exception as e:        # noqa: BLE001 - reported, the next model goes on
            failures.append((name, f"{type(e).__name__}: {str(e).strip()[:300]}"))
            print(f"{name:<30} FAILED: {failures[-1][1]}", flush=True)
            continue
        manifest["models"] = [r for r in manifest["models"] if r["name"] != name] + [record]
        save_manifest(args.out, manifest)
        note = f"  (dynamo failed: {record['dynamo_failed'][:80]})" \
            if "dynamo_failed" in record else ""
        print(f"{name:<30} {record['exporter']:<12} opset {record['opset']:<3} "
              f"{record['nodes']:>5} nodes  {time.time() - t0:6.1f} s{note}", flush=True)
    print(f"# {len(manifest['models'])} models in {args.out}/manifest.json; "
          f"{len(failures)} failed to export")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
