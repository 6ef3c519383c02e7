"""Helpers that several test files share."""
import torch
from torch import nn

LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def random_weights(model, std):
    """Every conv and linear weight drawn from N(0, std^2): unlike the notebook's start
    (a zero last layer, std 0.01), the output then depends on z and y."""
    for m in model.modules():
        if isinstance(m, LAYERS):
            nn.init.normal_(m.weight, std=std)
    return model


class Stub(nn.Module):
    """A stand-in for a model in the notebook's helpers: one parameter, so that
    chunked() can ask it for its device."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
