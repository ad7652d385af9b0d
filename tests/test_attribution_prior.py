"""``attribution_prior``: the penalty against an independent computation (per-image attributions from ``torch.func``,
the Gini coefficient from its pairwise definition, the total variation in loops), parameter gradients against
autograd through that computation, zero strength equal to ``erm`` after an optimizer step, conformance (which
includes the no-host-synchronization check) for every prior × attribution, and the defaults."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

import gibench
from gibench.core.errors import ConfigError
from gibench.regularizers.attribution_prior import AttributionPrior, gini, reference_shifts, total_variation
from gibench.testing import check_regularizer, tiny_bundle, tiny_model
from gibench.training.models import Normalize

DT = torch.float64
PRIORS = ("gini", "total_variation")
ATTRIBUTIONS = ("x_gradient", "input_gradient", "expected_gradients")


def x_cnn(c: int = 2, h: int = 5, w: int = 4, k: int = 3, seed: int = 0) -> nn.Module:
    """A bias-free ReLU CNN behind a Normalize layer, as a gibench X-DNN model (float64)."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(c, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                             nn.Linear(3 * h * w, k, bias=False))
    normalize = Normalize([0.4, 0.6][:c], [0.2, 0.3][:c])
    return nn.Sequential(OrderedDict(normalize=normalize, backbone=backbone)).to(DT).train()


def batch(n: int = 5, c: int = 2, h: int = 5, w: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, c, h, w, generator=g, dtype=DT), torch.arange(n) % 3


def logit_grad(model: nn.Module, params, point: torch.Tensor, label: int) -> torch.Tensor:
    """∇x f_label at one image (C, H, W), by torch.func, differentiable with respect to ``params``."""
    f = lambda p, xb: functional_call(model, p, (xb.unsqueeze(0),))[0, label]  # noqa: E731
    return grad(f, argnums=1)(params, point)


def attribution_by_hand(model, params, x, y, attribution: str, references: int, alphas) -> torch.Tensor:
    mean = model.normalize.mean[0]
    rows = []
    for b in range(len(y)):
        if attribution == "input_gradient":
            rows.append(logit_grad(model, params, x[b], int(y[b])))
        elif attribution == "x_gradient":
            rows.append((x[b] - mean) * logit_grad(model, params, x[b], int(y[b])))
        else:
            total = torch.zeros_like(x[b])
            for j, shift in enumerate(reference_shifts(len(y), references)):
                ref = x[(b - shift) % len(y)]
                alpha = alphas[j * len(y) + b]
                total = total + (x[b] - ref) * logit_grad(model, params, ref + alpha * (x[b] - ref), int(y[b]))
            rows.append(total / references)
    return torch.stack(rows)


def gini_by_hand(a: torch.Tensor) -> torch.Tensor:
    """½ · mean_{i,j} |v_i − v_j| / mean(v), v the batch mean of |a| per coordinate (pairwise, i = j included)."""
    v = a.abs().mean(0).flatten()
    return 0.5 * (v[:, None] - v[None, :]).abs().mean() / v.mean()


def tv_by_hand(a: torch.Tensor) -> torch.Tensor:
    """mean over images of the TV of the tf.image.per_image_standardization of the map, in loops."""
    n, c, h, w = a.shape
    values = []
    for b in range(n):
        m = a[b]
        z = (m - m.mean()) / torch.clamp(m.std(unbiased=False), min=1 / math.sqrt(m.numel()))
        tv = sum((z[ch, i + 1, j] - z[ch, i, j]).abs() for ch in range(c) for i in range(h - 1) for j in range(w))
        tv = tv + sum((z[ch, i, j + 1] - z[ch, i, j]).abs() for ch in range(c) for i in range(h) for j in range(w - 1))
        values.append(tv)
    return torch.stack(values).mean()


@pytest.mark.parametrize(("prior", "attribution"), list(itertools.product(PRIORS, ATTRIBUTIONS)))
def test_loss_and_parameter_gradients_match_the_independent_computation(prior, attribution):
    model, (x, y) = x_cnn(), batch()
    references, weight = (3 if attribution == "expected_gradients" else 1), 0.7
    reg = AttributionPrior(AttributionPrior.Config(prior=prior, attribution=attribution, references=references,
                                                   weight=weight))
    torch.manual_seed(5)
    loss = reg.training_loss(model, x, y)
    got = torch.autograd.grad(loss.total, list(model.parameters()))

    torch.manual_seed(5)
    alphas = torch.rand(len(y) * references, dtype=DT)  # the draws the regularizer makes (same generator state)
    params = dict(model.named_parameters())
    a = attribution_by_hand(model, params, x, y, attribution, references, alphas)
    value = gini_by_hand(a) if prior == "gini" else tv_by_hand(a)
    ce = F.cross_entropy(functional_call(model, params, (x,)), y)
    expected_total = ce + weight * (-value if prior == "gini" else value)
    expected = torch.autograd.grad(expected_total, list(params.values()), retain_graph=True)

    assert loss.total.item() == pytest.approx(expected_total.item(), rel=1e-10)
    assert loss.parts["cross_entropy"].item() == pytest.approx(ce.item(), rel=1e-12)
    assert loss.parts[prior].item() == pytest.approx(value.item(), rel=1e-10)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)
    # the prior's own gradient reaches every parameter tensor
    plain = torch.autograd.grad(ce, list(params.values()))
    assert all((g - p).abs().max() > 1e-6 for g, p in zip(got, plain))


def test_gini_and_total_variation_by_numpy_on_fixed_maps():
    """The two prior functions on fixed arrays, against numpy written from the definitions."""
    a = torch.tensor(np.random.default_rng(0).normal(size=(4, 2, 3, 5)))
    v = np.abs(a.numpy()).mean(0).ravel()
    pairwise = np.mean([abs(p - q) for p in v for q in v])
    assert gini(a).item() == pytest.approx(0.5 * pairwise / v.mean(), rel=1e-12)
    tv = []
    for m in a.numpy():
        z = (m - m.mean()) / max(m.std(), 1 / math.sqrt(m.size))
        tv.append(np.abs(np.diff(z, axis=1)).sum() + np.abs(np.diff(z, axis=2)).sum())
    assert total_variation(a).item() == pytest.approx(float(np.mean(tv)), rel=1e-12)
    # landmarks: equal mass everywhere has Gini 0, all mass on one of D coordinates has Gini 1 − 1/D
    assert gini(torch.ones(3, 1, 2, 2, dtype=DT)).item() == pytest.approx(0.0, abs=1e-15)
    spike = torch.zeros(3, 1, 2, 2, dtype=DT)
    spike[:, 0, 1, 1] = 2.0
    assert gini(spike).item() == pytest.approx(1 - 1 / 4, rel=1e-12)
    assert gini(torch.zeros(2, 1, 2, 2, dtype=DT)).item() == 0.0  # no NaN on an all-zero attribution
    # a constant map standardizes to 0 (std floored), so its TV is 0
    assert total_variation(torch.full((2, 1, 3, 3), 5.0, dtype=DT)).item() == 0.0


@pytest.mark.parametrize(("prior", "attribution"), list(itertools.product(PRIORS, ATTRIBUTIONS)))
def test_zero_weight_takes_the_same_step_as_erm(prior, attribution):
    bundle = tiny_bundle()
    x, y = bundle.train.x[:16], bundle.train.y[:16]
    models = [tiny_model(bundle), tiny_model(bundle)]
    regs = [gibench.create_regularizer("erm"),
            gibench.create_regularizer("attribution_prior", prior=prior, attribution=attribution, weight=0.0)]
    for model, reg in zip(models, regs):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        reg.training_loss(model, x, y).total.backward()
        opt.step()
    for (name, p), q in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(p, q), name  # weights and BatchNorm running statistics alike


@pytest.mark.parametrize(("prior", "attribution"), list(itertools.product(PRIORS, ATTRIBUTIONS)))
def test_every_combination_conforms(prior, attribution):
    """gibench.testing's contract, including no host read (``.item()``, ``bool``…) inside a step."""
    check_regularizer("attribution_prior", params={"prior": prior, "attribution": attribution, "references": 2,
                                                   "weight": 0.5})


def test_expected_gradients_leave_batchnorm_running_statistics_to_the_clean_pass():
    bundle = tiny_bundle()
    x, y = bundle.train.x[:16], bundle.train.y[:16]
    eg, erm = tiny_model(bundle), tiny_model(bundle)
    gibench.create_regularizer("attribution_prior", attribution="expected_gradients", references=3).training_loss(
        eg, x, y)
    erm(x)
    for key in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(eg.state_dict()[key], erm.state_dict()[key]), key


def test_references_come_from_the_batch_and_never_the_image_itself():
    assert reference_shifts(64, 1) == [1]
    assert reference_shifts(64, 3) == [1, 2, 3]
    assert reference_shifts(3, 5) == [1, 2, 1, 2, 1]  # cycles through 1..N−1
    assert reference_shifts(1, 2) == [1, 1]  # one image: its own reference (an attribution of zero)


def test_defaults_and_bad_values():
    reg = gibench.create_regularizer("attribution_prior")
    assert (reg.config.prior, reg.config.attribution, reg.config.references) == ("gini", "x_gradient", 1)
    assert reg.config.weight == 1.0
    assert gibench.create_regularizer("attribution_prior", prior="total_variation").config.weight == 1e-3
    assert gibench.create_regularizer("attribution_prior", weight=0.25).config.weight == 0.25
    explicit = gibench.create_regularizer("attribution_prior", prior="total_variation", weight=1e-3)
    implicit = gibench.create_regularizer("attribution_prior", prior="total_variation")
    assert explicit.config_dict() == implicit.config_dict()
    assert AttributionPrior.amp_safe is False
    for params, field in (({"prior": "l1"}, "prior"), ({"attribution": "ig"}, "attribution"),
                          ({"references": 0}, "references"), ({"weight": -1.0}, "weight")):
        with pytest.raises(ConfigError, match=field):
            gibench.create_regularizer("attribution_prior", **params)


def test_the_gini_prior_raises_the_gini_of_the_attributions_in_a_few_steps():
    """Fifty Adam steps on the tiny bundle: λ = 1 raises the Gini of the X-Gradient on held-out images well above
    erm's from the same start, and keeps the model accurate."""
    bundle = tiny_bundle()
    x, y = bundle.train.x, bundle.train.y
    xt, yt = bundle.test.x, bundle.test.y
    results = {}
    for name, params in (("erm", {}), ("attribution_prior", {"weight": 1.0})):
        model = tiny_model(bundle, batch_norm=False)
        reg, opt = gibench.create_regularizer(name, **params), torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            idx = torch.randint(0, len(y), (32,), generator=g)
            opt.zero_grad()
            reg.training_loss(model, x[idx], y[idx]).total.backward()
            opt.step()
        model.eval()
        attribution = gibench.x_gradient(model, xt, yt)
        results[name] = (gini(attribution).item(), (model(xt).argmax(1) == yt).float().mean().item())
    assert results["attribution_prior"][0] > results["erm"][0] + 0.1, results
    assert results["attribution_prior"][1] > 0.8, results


def test_standard_trains_both_priors_on_the_x_cnn_and_scores_them_with_keep_remove_on_the_x_gradient():
    from gibench.suites.jobs import expand
    from gibench.suites.suite import load_suite

    suite = load_suite("standard")
    jobs = [j for j in expand(suite) if j.regularizer.name == "attribution_prior"]
    x_jobs = [j for j in jobs if j.backbone.config.get("bias") is False]
    priors = {(j.dataset.name, j.regularizer.config["prior"], j.regularizer.config["weight"]) for j in x_jobs}
    x_datasets = suite.grids[0].datasets  # the X grid's, which are the main grid's (DecoyMNIST trains an MLP only)
    assert priors == {(d.name, p, w) for d in x_datasets for p, w in (("gini", 1.0), ("total_variation", 1e-3))}
    for job in x_jobs:
        sal = {e.config.get("saliency", "input_gradient") for e in job.evaluators if e.name == "keep_remove"}
        assert sal == {"input_gradient", "x_gradient"}, (job.dataset.name, job.regularizer.params)
    assert all(j.regularizer.config["attribution"] == "x_gradient" for j in jobs)
