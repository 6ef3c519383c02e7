"""Every formula of the loss against an independent source."""
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence


def test_kl_matches_torch_distributions(nb):
    torch.manual_seed(1)
    mu, logvar = torch.randn(100, 2) * 2, torch.randn(100, 2) * 3
    q = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(q, Normal(torch.zeros(2), torch.ones(2))).sum(-1)
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


def model_and_batch(nb, seed):
    """A CVAE whose decoder is no longer all zeros, and a random batch."""
    torch.manual_seed(seed)
    model = nb.CVAE()
    nn.init.normal_(model.dec_conv[-1].weight, std=0.1)
    return model, torch.rand(16, 1, 28, 28), torch.arange(16) % 10


def test_vae_loss_combines_the_terms(nb):
    model, x, y = model_and_batch(nb, seed=3)
    loss, recon, kl = nb.vae_loss(model, x, y, 2.5, torch.Generator().manual_seed(0))
    logits, mu, logvar = model(x, y, torch.Generator().manual_seed(0))
    r, k = nb.recon_loss(logits, x), nb.kl_divergence(mu, logvar)
    assert torch.allclose(recon, r.mean()) and torch.allclose(kl, k.mean())
    assert torch.allclose(loss, (r + 2.5 * k).mean())


def test_logvar_is_clamped_for_extreme_inputs(nb):
    model = nb.CVAE()
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    for bias, bound in ((1e4, 8.0), (-1e4, -8.0)):
        nn.init.constant_(model.logvar_head.bias, bias)
        _, logvar = model.encode(x, y)
        assert torch.all(logvar == bound)
    nn.init.constant_(model.logvar_head.bias, 3.0)
    assert torch.allclose(model.encode(x, y)[1], torch.full((4, 2), 3.0), atol=0.1)


def test_reparameterization_gradients_by_hand(nb):
    """z = mu + exp(logvar/2) eps: dz/dmu = 1, dz/dlogvar = exp(logvar/2) eps / 2."""
    mu = torch.tensor([[0.3, -1.2]], requires_grad=True)
    logvar = torch.tensor([[0.4, -2.0]], requires_grad=True)
    z = nb.reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    eps = torch.randn((1, 2), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(1, 2))
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_gradients_reach_both_encoder_heads(nb):
    model, x, y = model_and_batch(nb, seed=4)
    loss, _, _ = nb.vae_loss(model, x, y, 1.0, torch.Generator().manual_seed(0))
    loss.backward()
    for head in (model.mu_head, model.logvar_head):
        assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
