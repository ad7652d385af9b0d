"""The metric-family evaluators against independent computations.

* ``random_logit``: ranks and Spearman against scipy, the cosine against numpy; a model whose logits share one
  gradient scores exactly 1; the other class is never the label and covers the other classes.
* ``complexity``: Gini and entropy against Quantus 0.6.0's ``Sparseness`` and ``Complexity`` (whose definitions
  research/explanation-metric-families.md §3 found correct) and against their closed forms.
* ``sensitivity``: max- and avg-sensitivity against captum 0.9.0's ``sensitivity_max`` and Quantus's
  ``MaxSensitivity``/``AvgSensitivity`` fed the identical perturbed inputs; a constant map scores 0.
* ``infidelity``: against captum's ``infidelity(normalize=True)`` with identical perturbations, on all three outputs;
  a linear model's logit is explained exactly; a hand-built f + g shift is penalised on the centred logit and not on
  the raw logit (the reason the centred logit is the default).
* On a small trained ``erm`` and ``fooled`` pair, every new headline orders as the pilot predicts, and
  ``gibench.results.sanity_table`` (``gibench report --sanity``) lists each of them.

Quantus and captum are test-only dependencies (the ``dev`` extra); the comparisons are skipped without them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import gibench
from gibench.api import registry
from gibench.api.draws import per_image_draws
from gibench.api.ranks import rankdata_average
from gibench.api.saliency import input_gradient, pixel_scores
from gibench.evaluators.complexity import entropy, gini
from gibench.evaluators.infidelity import (
    explained_output,
    gaussian_perturbation,
    infidelity_terms,
    noisy_baseline_perturbation,
)
from gibench.evaluators.random_logit import map_cosine, other_classes, spearman
from gibench.evaluators.sensitivity import STREAM, perturbed_copies, sensitivity_draws
from gibench.testing import make_eval_context, tiny_bundle

NEW = ("random_logit", "complexity", "sensitivity", "infidelity")


def smooth_model(seed: int = 0, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Softplus(beta=5), nn.Linear(16, num_classes)).eval()


class SharedGradient(nn.Module):
    """f_k(x) = g(x) + b_k: every logit has the same input-gradient ∇g."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.g = smooth_model(1, num_classes=1)
        self.bias = nn.Parameter(torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.g(x) + self.bias


class ShiftedByG(nn.Module):
    """A hand-built ``fooled`` model: f(x) + c·⟨t, x⟩ added to every logit (Srinivas & Fleuret's f + g)."""

    def __init__(self, base: nn.Module, scale: float = 5.0) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("t", torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(7)))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * (self.t * x).flatten(1).sum(1, keepdim=True)


def batch(n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    bundle = tiny_bundle(test_size=max(n, 12), seed=seed)
    return bundle.test.x[:n], bundle.test.y[:n]


def evaluate(name: str, model: nn.Module, bundle=None, batch_size: int = 16, tmp_path=None, **params):
    bundle = bundle if bundle is not None else tiny_bundle()
    folder = tmp_path if tmp_path is not None else "/tmp/gibench-test-metric-families"
    ctx = make_eval_context(model, bundle, folder, batch_size=batch_size)
    return gibench.create_evaluator(name, **params).evaluate(ctx).scalars


# ----------------------------------------------------------------------------------------------------------------------
# Random logit


def test_average_ranks_and_spearman_match_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 40), generator=generator).double()  # many ties
    b = torch.randint(0, 5, (6, 40), generator=generator).double()
    ranks = rankdata_average(a)
    for i in range(6):
        np.testing.assert_allclose(ranks[i].numpy(), scipy_stats.rankdata(a[i].numpy()), rtol=0, atol=1e-12)
        assert spearman(a, b)[i].item() == pytest.approx(scipy_stats.spearmanr(a[i], b[i]).statistic, abs=1e-12)


def test_map_cosine_matches_numpy_and_handles_degenerate_maps():
    a, b = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    fa, fb = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
    expected = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    np.testing.assert_allclose(map_cosine(a, b).numpy(), expected, rtol=1e-12)
    zero = torch.zeros(2, 4)
    assert map_cosine(zero, zero).tolist() == [1.0, 1.0] and spearman(zero, zero).tolist() == [1.0, 1.0]
    assert map_cosine(zero, torch.ones(2, 4)).tolist() == [0.0, 0.0]
    assert spearman(torch.ones(2, 4), torch.randn(2, 4)).tolist() == [0.0, 0.0]


def test_other_class_is_never_the_label_and_is_uniform_over_the_rest():
    y = torch.arange(30000) % 5
    others = other_classes(y, 5, seed=3)
    assert not (others == y).any()
    counts = torch.bincount(others[y == 0], minlength=5)  # label 0: the 6000 draws spread over classes 1..4
    assert counts[0] == 0 and ((counts[1:] - 1500).abs() < 150).all()
    assert torch.equal(others, other_classes(y, 5, seed=3)) and not torch.equal(others, other_classes(y, 5, seed=4))


def test_random_logit_scores_one_for_logits_that_share_one_gradient(tmp_path):
    scores = evaluate("random_logit", SharedGradient(), tmp_path=tmp_path)
    assert scores["cosine"] == pytest.approx(1.0, abs=1e-12) and scores["spearman"] == pytest.approx(1.0, abs=1e-12)


def test_random_logit_catches_a_hand_built_shift_and_matches_a_direct_computation(tmp_path):
    base = smooth_model()
    bundle = tiny_bundle()
    plain = evaluate("random_logit", base, bundle, tmp_path=tmp_path)
    shifted = evaluate("random_logit", ShiftedByG(base), bundle, tmp_path=tmp_path)
    assert shifted["cosine"] > 0.9 > plain["cosine"] + 0.5
    # a direct per-image computation with the same other classes
    x, y = bundle.test.x, bundle.test.y
    others = other_classes(y, 3, seed=0)
    cos = [np.dot(g1 := input_gradient(base, x[i:i + 1], y[i:i + 1]).flatten().double().numpy(),
                  g2 := input_gradient(base, x[i:i + 1], others[i:i + 1]).flatten().double().numpy())
           / np.linalg.norm(g1) / np.linalg.norm(g2) for i in range(len(y))]
    assert plain["cosine"] == pytest.approx(float(np.mean(cos)), abs=1e-6)  # float32 gradients, batched vs one


# ----------------------------------------------------------------------------------------------------------------------
# Complexity


def test_gini_and_entropy_closed_forms():
    n = 36
    uniform, peak = torch.ones(1, n), torch.zeros(1, n)
    peak[0, 5] = 2.0
    assert gini(uniform).item() == pytest.approx(0.0, abs=1e-15) and gini(peak).item() == pytest.approx((n - 1) / n)
    assert entropy(uniform).item() == pytest.approx(math.log(n)) and entropy(peak).item() == 0.0
    assert gini(torch.zeros(1, n)).item() == 0.0 and entropy(torch.zeros(1, n)).item() == pytest.approx(math.log(n))
    two = torch.tensor([[0.0, 1.0, 1.0, 2.0]])  # sorted 0,1,1,2: Σ(2i−n−1)s_i = (-3·0 −1·1 +1·1 +3·2) = 6; /(4·4)
    assert gini(two).item() == pytest.approx(6 / 16)
    assert gini(3.7 * two).item() == pytest.approx(gini(two).item())  # scale-invariant


def test_complexity_matches_quantus_on_a_models_saliency(tmp_path):
    quantus = pytest.importorskip("quantus")
    bundle, model = tiny_bundle(), smooth_model()
    scores = evaluate("complexity", model, bundle, tmp_path=tmp_path)
    x, y = bundle.test.x, bundle.test.y
    a = pixel_scores(input_gradient(model, x, y)).unsqueeze(1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_gini = quantus.Sparseness(disable_warnings=True)(model=None, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a)
        q_entropy = quantus.Complexity(disable_warnings=True)(model=None, x_batch=x.numpy(), y_batch=y.numpy(),
                                                              a_batch=a)
    # Quantus adds 1e-7 after dividing by the batch maximum (Gini) and works in float32 (entropy)
    assert scores["gini"] == pytest.approx(float(np.mean(q_gini)), abs=1e-6)
    assert scores["entropy"] == pytest.approx(float(np.mean(q_entropy)), abs=1e-5)
    ours = gini(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(ours, np.asarray(q_gini, dtype=np.float64), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Sensitivity


def _draws(x: Tensor, num_samples: int, radius: float, seed: int = 0) -> Tensor:
    noise = per_image_draws(seed, STREAM, 0, len(x), num_samples, tuple(x.shape[1:]), torch.device("cpu"), "uniform")
    return perturbed_copies(x, noise, radius)


def test_sensitivity_matches_captum_sensitivity_max_on_the_same_draws():
    captum_metrics = pytest.importorskip("captum.metrics")
    model, (x, y) = smooth_model(), batch()
    perturbed = _draws(x, 6, 0.1)
    ours = sensitivity_draws(model, input_gradient, x, y, perturbed)
    feed = perturbed.flatten(0, 1)  # captum repeats each input S times (repeat_interleave) before perturbing

    def perturb(inputs, perturb_radius):
        assert inputs.shape == feed.shape
        return feed

    def explain(inputs, target):  # captum passes (and expects back) a tuple for the clean input
        if isinstance(inputs, tuple):
            return (input_gradient(model, inputs[0], target),)
        return input_gradient(model, inputs, target)

    theirs = captum_metrics.sensitivity_max(explain, x, perturb_func=perturb, n_perturb_samples=6, target=y)
    torch.testing.assert_close(ours.ratios.amax(1), theirs.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["MaxSensitivity", "AvgSensitivity"])
def test_sensitivity_matches_quantus_on_the_same_draws(kind):
    quantus = pytest.importorskip("quantus")
    model, (x, y) = smooth_model(), batch()
    perturbed = _draws(x, 5, 0.1)
    ours = sensitivity_draws(model, input_gradient, x, y, perturbed).ratios
    ours = ours.amax(1) if kind == "MaxSensitivity" else ours.mean(1)
    step = iter(range(5))

    def perturb(arr, indices, **kwargs):  # Quantus draws one batch-wide perturbation per step
        return perturbed[:, next(step)].reshape(arr.shape).numpy()

    def explain(model, inputs, targets, **kwargs):
        return input_gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    a = input_gradient(model, x, y).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = getattr(quantus, kind)(nr_samples=5, perturb_func=perturb, disable_warnings=True)
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, explain_func=explain,
                        device="cpu", batch_size=64)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-5, atol=1e-7)


def test_sensitivity_evaluator_equals_its_draws_and_a_constant_map_scores_zero(tmp_path):
    bundle, model = tiny_bundle(), smooth_model()
    scores = evaluate("sensitivity", model, bundle, batch_size=20, tmp_path=tmp_path, num_samples=4, max_images=10)
    x, y = bundle.test.x[:10], bundle.test.y[:10]
    radius = 8 / 255  # "tiny" is not in the radius mapping
    direct = sensitivity_draws(model, input_gradient, x, y, _draws(x, 4, radius))
    assert scores["max_sensitivity"] == pytest.approx(direct.ratios.amax(1).mean().item(), rel=1e-6)
    assert scores["avg_sensitivity"] == pytest.approx(direct.ratios.mean().item(), rel=1e-6)
    assert scores["prediction_flip_share"] == direct.flips.double().mean().item()
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()  # its gradient is the same map everywhere
    constant = evaluate("sensitivity", linear, bundle, tmp_path=tmp_path, num_samples=4, max_images=10)
    assert constant["max_sensitivity"] == 0.0 and constant["avg_sensitivity"] == 0.0


def test_sensitivity_draws_stay_in_the_radius_and_the_data_range():
    x = torch.tensor([0.0, 0.02, 0.5, 1.0]).view(1, 1, 2, 2)
    perturbed = _draws(x, 200, 0.1)
    assert perturbed.min() >= 0.0 and perturbed.max() <= 1.0
    assert ((perturbed - x.unsqueeze(1)).abs() <= 0.1 + 1e-7).all()
    assert (perturbed[:, :, 0, 0, 1] - 0.5).abs().max() > 0.09  # the middle pixel uses the whole radius


def test_sensitivity_radius_is_set_per_dataset():
    config = gibench.create_evaluator("sensitivity").config
    assert config.radius_for("mnist_subset") == 0.1 and config.radius_for("blockmnist") == 0.1
    assert config.radius_for("cifar10") == pytest.approx(8 / 255)
    custom = gibench.create_evaluator("sensitivity", radius={"cifar10": 0.01}, default_radius=0.05).config
    assert custom.radius_for("cifar10") == 0.01 and custom.radius_for("mnist") == 0.05
    with pytest.raises(gibench.core.errors.ConfigError):
        gibench.create_evaluator("sensitivity", radius={"mnist": -1.0})


# ----------------------------------------------------------------------------------------------------------------------
# Infidelity


class OutputOf(nn.Module):
    """The (N, K) matrix whose column y is F(x) for every y: what captum's forward_func returns."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        k = logits.shape[1]
        return torch.stack([explained_output(logits, torch.full((len(x),), c), self.output) for c in range(k)], 1)


@pytest.mark.parametrize("output", ["centred_logit", "log_softmax", "logit"])
def test_infidelity_matches_captum_normalized_on_the_same_perturbations(output):
    captum_metrics = pytest.importorskip("captum.metrics")
    # In float64, so that the comparison tests the formula and not float32 rounding: the residual
    # Iᵀa − (f(x) − f(x − I)) is a difference of logits of order 1, and captum's float32 copy of it differed from ours
    # by up to 2e-4 of the infidelity on one CPU (Intel AVX-512) and not on another; in float64 they agree to 1e-12.
    model, (x, y) = smooth_model().double(), batch()
    x = x.double()
    noise = per_image_draws(0, 2, 0, len(x), 7, tuple(x.shape[1:]), torch.device("cpu"), "normal").double()
    for perturbation in (gaussian_perturbation(x, noise, 0.1), noisy_baseline_perturbation(x, noise, 0.2, 0.0)):
        a = input_gradient(model, x, y)
        ours = infidelity_terms(model, x, y, a, perturbation, output)
        flat = perturbation.flatten(0, 1)

        def perturb(inputs, flat=flat):
            return flat, inputs - flat

        theirs = captum_metrics.infidelity(OutputOf(model, output), perturb, x, a, target=y, n_perturb_samples=7,
                                           normalize=True)
        torch.testing.assert_close(ours.infidelity, theirs, rtol=1e-9, atol=1e-15)
        assert ((0 <= ours.relative) & (ours.relative <= 1)).all()


def test_a_linear_logit_is_explained_exactly_and_beta_removes_the_scale():
    model, (x, y) = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(), batch()
    noise = per_image_draws(0, 2, 0, len(x), 16, tuple(x.shape[1:]), torch.device("cpu"), "normal")
    perturbation = gaussian_perturbation(x, noise, 0.3)  # clipped, but I is the applied perturbation
    a = input_gradient(model, x, y)
    exact = infidelity_terms(model, x, y, a, perturbation, "logit")
    assert exact.relative.max() < 1e-9
    other = smooth_model()
    a = input_gradient(other, x, y)
    once = infidelity_terms(other, x, y, a, perturbation, "centred_logit")
    scaled = infidelity_terms(other, x, y, 1000 * a, perturbation, "centred_logit")
    torch.testing.assert_close(once.infidelity, scaled.infidelity, rtol=1e-6, atol=1e-12)


def test_a_shift_shared_by_every_logit_is_penalised_on_the_centred_logit_only(tmp_path):
    base, bundle = smooth_model(), tiny_bundle()
    fooled = ShiftedByG(base)
    plain = evaluate("infidelity", base, bundle, tmp_path=tmp_path, num_samples=16)
    shifted = evaluate("infidelity", fooled, bundle, tmp_path=tmp_path, num_samples=16)
    on_logit = {name: evaluate("infidelity", m, bundle, tmp_path=tmp_path, num_samples=16, output="logit")
                for name, m in (("plain", base), ("shifted", fooled))}
    key = "relative_infidelity_gaussian"
    assert shifted[key] > 0.9 and shifted[key] > plain[key] + 0.3  # ∇g predicts nothing of the centred logit
    assert on_logit["shifted"][key] <= on_logit["plain"][key]  # but explains the raw logit (g is linear)


# ----------------------------------------------------------------------------------------------------------------------
# Declarations, the sanity view, and a trained erm / fooled pair


@pytest.mark.parametrize("name", NEW)
def test_each_evaluator_declares_one_ranked_headline_with_bounds(name):
    cls = registry.evaluators.get(name)
    headlines = [m for m in cls.metrics if m.headline]
    assert len(headlines) == 1 and not headlines[0].diagnostic and cls.judges_saliency
    assert all(m.bounds != (-math.inf, math.inf) for m in cls.metrics)


def _train(bundle, name: str, epochs: int = 2) -> nn.Module:
    from gibench.training.models import build_model

    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus"}, bundle)
    regularizer = gibench.create_regularizer(name)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    n = len(bundle.train.y)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, 64):
            idx = order[start:start + 64]
            loss = regularizer.training_loss(model, bundle.train.x[idx], bundle.train.y[idx])
            optimizer.zero_grad()
            loss.total.backward()
            optimizer.step()
    return model.eval()


#: the pilot's direction (research/explanation-metric-families.md §7.1): fooled scores worse on every headline
SMALL = {"random_logit": {"max_images": 60}, "complexity": {"max_images": 60},
         "sensitivity": {"max_images": 30, "num_samples": 8}, "infidelity": {"max_images": 30, "num_samples": 16}}


@pytest.mark.slow
def test_trained_fooled_scores_worse_than_erm_on_every_new_headline_and_the_sanity_view_says_so(one_thread, tmp_path):
    from gibench.data.tensors import make_bundle
    from gibench.results.tables import sanity_table

    full = gibench.load_dataset("mnist_subset")
    bundle = make_bundle("mnist_subset", full.train.x[:1024], full.train.y[:1024], full.test.x[:100],
                         full.test.y[:100], num_classes=10)
    models = {"erm": _train(bundle, "erm"), "fooled": _train(bundle, "fooled")}
    rows = []
    for name in NEW:
        cls = registry.evaluators.get(name)
        for variant, model in models.items():
            scores = evaluate(name, model, bundle, batch_size=64, tmp_path=tmp_path, **SMALL[name])
            for metric in cls.metrics:
                rows.append({"dataset": "mnist_subset", "backbone": "gibench_cnn", "variant": variant,
                             "regularizer": variant, "seed": 0, "status": "ok", "evaluator": name,
                             "metric": metric.name, "value": scores[metric.name], "headline": metric.headline,
                             "higher_is_better": metric.higher_is_better})
    table = sanity_table(pd.DataFrame(rows)).set_index("evaluator")
    assert set(NEW) <= set(table.index)
    failing = {name: (table.loc[name, "erm"], table.loc[name, "fooled"]) for name in NEW
               if not table.loc[name, "passes"]}
    assert not failing, f"fooled not worse than erm on (erm, fooled): {failing}"
