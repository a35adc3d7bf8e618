"""A residual 3D UNet with the spleen tutorial's channels (16, 32, 64, 128, 256), and DiceCE loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResUnit(nn.Module):
    """Two conv-norm-PReLU layers with a residual projection (MONAI's ``num_res_units=2`` shape)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm3d(cout),
            nn.PReLU(),
            nn.Conv3d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm3d(cout),
            nn.PReLU(),
        )
        self.skip = nn.Conv3d(cin, cout, 1 if stride == 1 else 3, stride, 0 if stride == 1 else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class UNet3D(nn.Module):
    """3D UNet: strided residual encoder, transposed-conv decoder with skip concatenation.

    Args:
        in_channels: input channels (default 1).
        out_channels: classes (default 2: background, spleen).
        channels: feature widths per level (default the tutorial's ``(16, 32, 64, 128, 256)``).

    Shape:
        ``(N, in_channels, D, H, W)`` -> ``(N, out_channels, D, H, W)``, D/H/W divisible by 16.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.down = nn.ModuleList(
            ResUnit(widths[i], widths[i + 1], stride=1 if i == 0 else 2) for i in range(len(channels))
        )
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            self.up.append(nn.ConvTranspose3d(channels[i], channels[i - 1], 2, 2))
            self.fuse.append(ResUnit(2 * channels[i - 1], channels[i - 1]))
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, fuse in zip(self.up, self.fuse, strict=True):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def dice_ce_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the batch (squared predictions), as the fast tutorial's DiceCE."""
    target = label[:, 0].long()
    ce = F.cross_entropy(logits.float(), target)
    prob = logits.float().softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = (prob * prob).sum(dims) + onehot.sum(dims)
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + dice.mean()


def foreground_dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    """Dice of the foreground class between an argmax prediction and a label (both spatial)."""
    p, g = pred.bool(), label.bool()
    denom = p.sum() + g.sum()
    return 1.0 if denom == 0 else float(2 * (p & g).sum() / denom)
