"""The architecture of the assignment: shapes, parameter count, logits, initialisation."""
import pytest
import torch
import torch.nn as nn

from helpers import LAYERS, random_weights


def assignment_parameter_count(z=2, emb=16, classes=10):
    """Weights + biases, counted by hand from the assignment's layer list."""
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def lin(nin, nout):
        return nin * nout + nout

    flat = 128 * 7 * 7
    encoder = conv(1, 32, 4) + conv(32, 64, 4) + conv(64, 128, 3) + lin(flat + emb, 256)
    heads = 2 * lin(256, z)
    decoder = (lin(z + emb, 256) + lin(256, flat) + conv(128, 64, 4) + conv(64, 32, 4)
               + conv(32, 1, 3))
    return classes * emb + encoder + heads + decoder


def test_parameter_count_matches_the_assignment(nb):
    assert sum(p.numel() for p in nb.CVAE().parameters()) == assignment_parameter_count()


def test_feature_map_shapes_28_14_7_and_back(nb):
    model = nb.CVAE()
    sizes = []

    def record(module, inputs, output):
        sizes.append(tuple(output.shape[1:]))
    for layer in [*model.enc_conv, *model.dec_conv]:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            layer.register_forward_hook(record)
    x, y = torch.rand(5, 1, 28, 28), torch.arange(5)
    mu, logvar = model.encode(x, y)
    logits = model.decode(mu, y)
    assert sizes == [(32, 14, 14), (64, 7, 7), (128, 7, 7),
                     (64, 14, 14), (32, 28, 28), (1, 28, 28)]
    assert logits.shape == (5, 1, 28, 28) and mu.shape == logvar.shape == (5, 2)
    assert model.emb.embedding_dim == 16 and model.mu_head.out_features == 2


def test_decoder_returns_logits_not_probabilities(nb):
    model = nb.CVAE()
    assert not any(isinstance(m, (nn.Sigmoid, nn.Tanh)) for m in model.modules())
    z, y = torch.randn(64, 2), torch.arange(64) % 10
    for bias in (-3.0, 3.0):  # the output follows the last bias unsquashed
        nn.init.constant_(model.dec_conv[-1].bias, bias)
        assert torch.allclose(model.decode(z, y), torch.full((64, 1, 28, 28), bias))


def test_initialisation_as_suggested(nb):
    torch.manual_seed(0)
    model = nb.CVAE()
    final = model.dec_conv[-1]
    assert torch.all(final.weight == 0) and torch.all(final.bias == 0)
    for m in model.modules():
        if isinstance(m, LAYERS):
            assert torch.all(m.bias == 0)
            if m is not final and m.weight.numel() > 1000:
                assert m.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_the_label_changes_the_decoded_image(nb):
    torch.manual_seed(1)
    model = random_weights(nb.CVAE(), std=0.15)
    images = nb.decode_mean(model, torch.zeros(10, 2), torch.arange(10))
    assert images.shape == (10, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    diffs = (images[:, None] - images[None]).abs().flatten(2).amax(2)
    assert (diffs + torch.eye(10)).min() > 1e-2  # every pair of labels differs
