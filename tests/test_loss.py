"""Every formula of the loss against an independent source."""
import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence

from helpers import random_weights


def test_kl_matches_torch_distributions(nb):
    torch.manual_seed(1)
    mu, logvar = torch.randn(100, 2) * 2, torch.randn(100, 2) * 3
    q = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(q, Normal(torch.zeros(2), torch.ones(2)))
    assert torch.allclose(nb.kl_divergence(mu, logvar), expected, rtol=1e-5, atol=1e-5)
    assert torch.all(nb.kl_divergence(torch.zeros(3, 2), torch.zeros(3, 2)) == 0)


def test_recon_is_the_bernoulli_negative_log_likelihood_summed_over_pixels(nb):
    torch.manual_seed(2)
    logits, x = torch.randn(6, 1, 28, 28) * 4, torch.rand(6, 1, 28, 28)
    p = torch.sigmoid(logits.double())
    by_hand = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(nb.recon_loss(logits, x).double(), by_hand, rtol=1e-5)
    # the assignment's form: mean BCE x 784, per image
    bce = nn.functional.binary_cross_entropy_with_logits
    means = torch.stack([bce(logits[i], x[i]) for i in range(6)]) * 784
    assert torch.allclose(nb.recon_loss(logits, x), means, rtol=1e-5)


@pytest.mark.parametrize("beta, expected", [
    (1.0, {1: 0.125, 4: 0.5, 8: 1.0, 9: 1.0, 20: 1.0}),
    (4.0, {1: 0.5, 4: 2.0, 8: 4.0, 9: 4.0, 20: 4.0}),
])
def test_beta_warmup_counts_epochs_from_one(nb, beta, expected):
    assert {e: nb.beta_schedule(beta, e, 8) for e in expected} == expected
    assert nb.beta_schedule(beta, 1, 0) == beta  # no warm-up
    assert nb.beta_schedule(beta, 1, 2) == beta / 2


def model_and_batch(nb, seed):
    """A CVAE whose weights are large enough for z and y to matter, and a random batch."""
    torch.manual_seed(seed)
    model = random_weights(nb.CVAE(), std=0.1)
    return model, torch.rand(16, 1, 28, 28), torch.arange(16) % 10


def test_elbo_terms_are_recon_at_the_sampled_z_and_the_closed_form_kl(nb):
    """The sample z of q(z | x, y) = N(mu, sigma^2) taken by inverting its CDF at the
    standard normal's CDF of eps (an independent route to mu + sigma * eps)."""
    model, x, y = model_and_batch(nb, seed=3)
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    recon, kl = nb.elbo_terms(model, x, y, eps)
    mu, logvar = model.encode(x, y)
    q = Normal(mu.double(), torch.exp(0.5 * logvar.double()))
    z = q.icdf(Normal(0.0, 1.0).cdf(eps.double())).float()
    assert torch.allclose(recon, nb.recon_loss(model.decode(z, y), x), rtol=1e-5)
    assert not torch.allclose(recon, nb.recon_loss(model.decode(mu, y), x), rtol=1e-3)
    assert torch.allclose(kl, nb.kl_divergence(mu, logvar).sum(1))


def test_logvar_is_clamped_for_extreme_inputs(nb):
    model = nb.CVAE()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    for bias, bound in ((1e4, 8.0), (-1e4, -8.0)):
        nn.init.constant_(model.logvar_head.bias, bias)
        assert torch.all(model.encode(x, y)[1] == bound)
    nn.init.constant_(model.logvar_head.bias, 3.0)
    assert torch.allclose(model.encode(x, y)[1], torch.full((4, 2), 3.0), atol=0.1)


def test_gradients_reach_both_encoder_heads(nb):
    model, x, y = model_and_batch(nb, seed=4)
    recon, kl = nb.elbo_terms(model, x, y, torch.randn(16, 2))
    (recon + kl).mean().backward()
    for head in (model.mu_head, model.logvar_head):
        assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


def test_recon_at_initialisation_is_784_ln2(nb):
    """Zero final conv: every logit is 0, so each pixel costs ln 2 whatever x is."""
    model = nb.CVAE()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    mu, logvar = model.encode(x, y)
    logits = model.decode(mu, y)
    assert torch.all(logits == 0)
    assert torch.allclose(nb.recon_loss(logits, x), torch.full((8,), 784 * math.log(2)),
                          atol=1e-3)
