"""The amortization gap (Cremer et al. 2018, *Inference suboptimality in variational autoencoders*).

A model's negative ELBO exceeds ``-log p(x)`` by ``KL(q || p(latents | x))``, which has two parts: the
*approximation gap* (the best diagonal Gaussian for this image is still not its true posterior; the IW bound closes
part of it) and the *amortization gap* (the encoders' Gaussian, one network for every image, is not the best one for
each). Here the encoders' posteriors are optimised for each image alone, the model fixed (semi-amortized inference,
Kim et al. 2018): the bound with them is still a bound on ``-log p(x)``, and its distance to the encoders' bound is
what a better encoder could gain at most at this decoder and prior.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from selfvae.distributions import DiagonalGaussian
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE


def refine(model: SelfVAE, x: Tensor, steps: int, lr: float = 3e-2, samples: int = 2,
           ) -> dict[str, DiagonalGaussian]:
    """The encoders' posteriors of uint8 images ``x`` (:meth:`SelfVAE.posteriors`), then their means and
    log-variances optimised by Adam for ``steps`` steps on the reparameterised negative ELBO of each image
    (``samples`` draws a step); the model's weights get no gradient. Uses torch's global RNG."""
    if steps < 0 or samples < 1:
        raise SelfVAEError(f"refine: steps={steps}, samples={samples}; expected steps >= 0 and samples >= 1")
    with torch.no_grad():
        start = model.posteriors(x)
    names = list(start)
    leaves = [t.detach().clone().requires_grad_() for name in names for t in (start[name].mu, start[name].logvar)]
    opt = torch.optim.Adam(leaves, lr=lr)

    def posteriors() -> dict[str, DiagonalGaussian]:
        return {name: DiagonalGaussian(leaves[2 * i], leaves[2 * i + 1]) for i, name in enumerate(names)}

    for _ in range(steps):
        loss = model.terms(x, n_samples=samples, q=posteriors()).nelbo.sum() / samples
        opt.zero_grad(set_to_none=True)
        grads = torch.autograd.grad(loss, leaves)  # not into the model's parameters
        for leaf, g in zip(leaves, grads, strict=True):
            leaf.grad = g
        opt.step()
    return {name: DiagonalGaussian(q.mu.detach(), q.logvar.detach()) for name, q in posteriors().items()}


def mean_nelbo(model: SelfVAE, x: Tensor, samples: int, seed: int, q: dict[str, DiagonalGaussian] | None = None,
               ) -> Tensor:
    """The negative ELBO of each image ``[B]`` in nats, averaged over ``samples`` draws from ``q`` (the encoders'
    where None) drawn from ``seed``: two posteriors measured with one seed are measured on the same noise."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.terms(x, n_samples=samples, q=q).nelbo.view(samples, x.shape[0]).mean(0)


def amortization_gap(model: SelfVAE, batches: Iterable[Tensor], steps: int, lr: float = 3e-2, samples: int = 2,
                     eval_samples: int = 16, seed: int = 0, device: str | torch.device = "cpu",
                     total: int | None = None, progress: bool = True) -> dict[str, float]:
    """Bits/dim of the images of ``batches`` by the ELBO with the encoders' posteriors (``bpd_elbo_encoders``) and
    with posteriors refined per image (:func:`refine`; ``bpd_elbo_refined``), each estimated with the same
    ``eval_samples`` draws an image; ``amortization_gap`` is their difference (at most what a better encoder gains)."""
    model.eval()
    sums, n = [0.0, 0.0], 0
    bar = tqdm(total=total, unit="img", desc=f"refine {steps} steps", disable=not progress, dynamic_ncols=True)
    for b, x in enumerate(batches):
        x = x.to(device)
        torch.manual_seed(seed + 1 + b)
        q = refine(model, x, steps, lr, samples)
        sums[0] += float(mean_nelbo(model, x, eval_samples, seed + b).double().sum())
        sums[1] += float(mean_nelbo(model, x, eval_samples, seed + b, q).double().sum())
        n += x.shape[0]
        bar.update(x.shape[0])
        bar.set_postfix(gap=f"{float(model.bpd(torch.tensor((sums[0] - sums[1]) / n))):.4f}")
    bar.close()
    if n == 0:
        raise SelfVAEError("amortization_gap: no images")
    encoders, refined = (float(model.bpd(torch.tensor(s / n))) for s in sums)
    return {"bpd_elbo_encoders": encoders, "bpd_elbo_refined": refined, "amortization_gap": encoders - refined,
            "refine_steps": steps, "refine_images": n}
