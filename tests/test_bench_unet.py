"""The train-mode model and loss of the benchmark harness (benchmarks/unet.py)."""

from __future__ import annotations

import torch

from benchmarks.unet import UNet3D, dice_ce_loss, foreground_dice


def test_unet_shapes_and_tutorial_channels():
    net = UNet3D()
    assert [m.body[0].out_channels for m in net.down] == [16, 32, 64, 128, 256]
    small = UNet3D(channels=(2, 4, 8))
    assert small(torch.zeros(2, 1, 16, 16, 16)).shape == (2, 2, 16, 16, 16)


def test_dice_ce_training_step_learns_a_blob():
    torch.manual_seed(0)
    img = torch.rand(2, 1, 16, 16, 16)
    lab = torch.zeros(2, 1, 16, 16, 16, dtype=torch.uint8)
    lab[:, :, 4:12, 4:12, 4:12] = 1
    img = img + 2.0 * lab  # the foreground is bright: learnable in a few steps
    net = UNet3D(channels=(4, 8, 16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = dice_ce_loss(net(img), lab)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    net.eval()
    with torch.no_grad():
        pred = net(img).argmax(1)[0]
    assert foreground_dice(pred, lab[0, 0]) > 0.8


def test_foreground_dice_edge_cases():
    z = torch.zeros(4, 4, 4)
    assert foreground_dice(z, z) == 1.0
    assert foreground_dice(torch.ones(4, 4, 4), z) == 0.0
