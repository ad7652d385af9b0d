"""``score_alignment`` against a learned score: the denoiser recovers the σ-smoothed score of a Gaussian mixture, the
Bayes-optimal model aligns with it and a shifted model does not, and the denoiser is trained once per dataset and σ.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import gibench
from gibench.api import denoiser
from gibench.api.plugin import ANALYTIC_SCORE, EvalContext
from gibench.core.errors import ConfigError, GibenchError
from gibench.data.gaussian_mixture import BayesClassifier, GaussianMixture, GaussianMixtureConfig
from gibench.evaluators.accuracy import Accuracy
from gibench.evaluators.score_alignment import (
    LPIPS_FILES,
    LPIPSAlex,
    ScoreAlignment,
    cosine,
    data_identity,
    lpips_similarity,
)
from gibench.running.runner import run_suite
from gibench.store.auxiliary import AuxiliaryModels
from gibench.suites.jobs import expand
from gibench.suites.suite import load_suite
from gibench.testing import make_eval_context
from tests.conftest import write_suite

MIXTURE = {"num_classes": 3, "height": 8, "width": 8, "train_size": 1000, "test_size": 200}
#: a tiny denoiser that learns the 8×8 mixture in about ten seconds on one core
LEARNED = {"score": "learned", "sigma": 0.1, "denoiser_width": 8, "denoiser_epochs": 12, "denoiser_batch_size": 100,
           "denoiser_lr": 5e-3, "max_images": 0}


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture(GaussianMixtureConfig(**MIXTURE)).load()


@pytest.fixture(scope="module")
def aux_root(tmp_path_factory, mixture) -> Path:
    """A store holding the mixture's denoiser, trained once for the whole module."""
    root = tmp_path_factory.mktemp("store") / "aux"
    aux = AuxiliaryModels(root)
    ScoreAlignment(ScoreAlignment.Config(**LEARNED)).score_function(ctx(nn.Identity(), mixture, root.parent, aux))
    assert len(aux.trained) == 1
    return root


def ctx(model, bundle, folder: Path, aux: AuxiliaryModels | None = None, job=None) -> EvalContext:
    return make_eval_context(model, bundle, folder, batch_size=64, aux=aux, job=job)


def smoothed_score(bundle, sigma: float, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """∇x log p_σ of the mixture convolved with N(0, σ²I): every variance grows by σ², posteriors use those."""
    density = bundle.extras["density"]
    mu, var = density.means.double(), density.stds.double().pow(2) + sigma**2  # (K, C, H, W)
    x = x.double().unsqueeze(1)  # (N, 1, C, H, W)
    per_class = -(x - mu) / var
    if y is not None:
        return per_class[torch.arange(len(y)), y]
    log_lik = (-0.5 * (x - mu).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)).flatten(2).sum(2)
    posterior = torch.softmax(log_lik + density.log_prior.double(), dim=1)
    return (posterior.view(*posterior.shape, 1, 1, 1) * per_class).sum(1)


class Shifted(nn.Module):
    """The Bayes model plus one g(x) on every logit: same softmax, same accuracy, meaningless gradients."""

    def __init__(self, base: nn.Module, dim: int) -> None:
        super().__init__()
        self.base = base
        g = torch.Generator().manual_seed(1)
        self.freq, self.phase = torch.randn(dim, generator=g) * 7, torch.rand(dim, generator=g) * 6.28

    def forward(self, x):
        return self.base(x) + 50 * torch.sin(x.flatten(1) * self.freq + self.phase).sum(1, keepdim=True)


# -- the learned score is the score of the smoothed density --------------------------------------------------------


def test_learned_denoiser_recovers_the_smoothed_mixture_score(mixture, aux_root, tmp_path):
    evaluator = ScoreAlignment(ScoreAlignment.Config(**LEARNED))
    aux = AuxiliaryModels(aux_root)
    score = evaluator.score_function(ctx(nn.Identity(), mixture, tmp_path, aux))
    assert aux.trained == []  # loaded from the store
    x, y = mixture.test.x, mixture.test.y
    sigma = LEARNED["sigma"]
    conditional = float(cosine(score(x, y), smoothed_score(mixture, sigma, x, y)).mean())
    unconditional = float(cosine(score(x, None), smoothed_score(mixture, sigma, x, None)).mean())
    # measured: 0.957 and 0.952
    assert conditional > 0.93 and unconditional > 0.93, (conditional, unconditional)
    # closer to the smoothed score than the exact score of the unsmoothed data is: it learned p_σ, not p
    unsmoothed = float(cosine(mixture.extras["score"](x, y), smoothed_score(mixture, sigma, x, y)).mean())
    assert unsmoothed < 0.91 and conditional > unsmoothed + 0.03
    torch.manual_seed(0)
    untrained = denoiser.build(mixture, ScoreAlignment.Config(**LEARNED).denoiser_training()).eval()
    assert float(cosine(untrained.score(x, y), smoothed_score(mixture, sigma, x, y)).mean()) < 0.5


def test_denoiser_quality_is_recorded_against_the_trivial_denoisers(aux_root):
    (folder,) = aux_root.glob("denoiser-*")
    quality = json.loads((folder / "quality.json").read_text())
    identity = json.loads((folder / "identity.json").read_text())["identity"]
    assert identity["training"]["sigma"] == 0.1 and identity["architecture"]["unet"] == "diffusers.UNet2DModel"
    assert identity["data"]["name"] == "gaussian_mixture" and len(identity["data"]["train_sha256"]) == 64
    # the identity denoiser's MSE is σ² up to the noise draw (and the few clipped pixels)
    assert quality["loss_identity"] == pytest.approx(0.1**2, rel=0.05)
    assert quality["loss_conditional"] < 0.2 * quality["loss_identity"]
    assert quality["loss_unconditional"] < 0.2 * quality["loss_mean"]
    best = min(quality["loss_identity"], quality["loss_mean"])
    assert quality["gain_over_trivial"] == pytest.approx(1 - quality["loss_unconditional"] / best)
    assert quality["train_images"] == MIXTURE["train_size"]


def test_bayes_model_aligns_with_the_learned_score_and_a_shift_destroys_it(mixture, aux_root, tmp_path):
    evaluator = ScoreAlignment(ScoreAlignment.Config(**LEARNED))
    bayes = BayesClassifier(mixture.extras["density"])
    shifted = Shifted(bayes, mixture.test.x[0].numel())
    aux = AuxiliaryModels(aux_root)
    aligned = evaluator.evaluate(ctx(bayes, mixture, tmp_path / "bayes", aux)).scalars
    x, y = mixture.test.x, mixture.test.y
    # the same cosine against the exact smoothed score: the learned score reproduces it
    exact = float(cosine(mixture.extras["score"](x, y), smoothed_score(mixture, LEARNED["sigma"], x, y)).mean())
    assert aligned["cosine_conditional"] > 0.8 and aligned["cosine_conditional"] == pytest.approx(exact, abs=0.08)
    assert aligned["cosine_unconditional"] > 0.8 and aligned["spearman_conditional"] > 0.8
    accuracy = [Accuracy().evaluate(ctx(m, mixture, tmp_path)).scalars["accuracy"] for m in (bayes, shifted)]
    assert accuracy[0] == accuracy[1] > 0.9
    destroyed = evaluator.evaluate(ctx(shifted, mixture, tmp_path / "shifted", aux)).scalars
    for name, value in destroyed.items():
        assert abs(value) < 0.3, (name, value)
    assert aux.trained == []  # both evaluations reused the stored denoiser


# -- trained once ----------------------------------------------------------------------------------------------------


def test_a_second_evaluation_and_a_rerun_reuse_the_denoiser(mixture, tmp_path):
    cheap = {**LEARNED, "denoiser_epochs": 1, "denoiser_max_train": 200, "min_denoiser_gain": -1.0, "max_images": 20}
    evaluator = ScoreAlignment(ScoreAlignment.Config(**cheap))
    aux = AuxiliaryModels(tmp_path / "aux")
    first = evaluator.evaluate(ctx(BayesClassifier(mixture.extras["density"]), mixture, tmp_path / "a", aux))
    second = evaluator.evaluate(ctx(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), mixture, tmp_path / "b", aux))
    assert len(aux.trained) == 1 and first.scalars != second.scalars
    rerun = AuxiliaryModels(tmp_path / "aux")
    again = evaluator.evaluate(ctx(BayesClassifier(mixture.extras["density"]), mixture, tmp_path / "c", rerun))
    assert rerun.trained == [] and again.scalars == first.scalars
    assert [p.name for p in (tmp_path / "aux").glob("denoiser-*")] == [f"denoiser-{aux.trained[0]}"]
    other_sigma = ScoreAlignment(ScoreAlignment.Config(**{**cheap, "sigma": 0.2}))
    other_sigma.evaluate(ctx(BayesClassifier(mixture.extras["density"]), mixture, tmp_path / "d", rerun))
    assert len(rerun.trained) == 1 and len(list((tmp_path / "aux").glob("denoiser-*"))) == 2  # σ is in the identity


def test_in_a_suite_every_job_on_the_dataset_shares_one_denoiser(tmp_path):
    options = {**LEARNED, "denoiser_epochs": 1, "denoiser_max_train": 200, "min_denoiser_gain": -1.0, "max_images": 20}
    dataset = {"gaussian_mixture": {**MIXTURE, "train_size": 300, "test_size": 50}}
    suite_file = write_suite(tmp_path, datasets=[dataset], regularizers=["erm", {"gradient_norm": {"weight": 1e-3}}],
                             evaluators=[{"score_alignment": options}])
    runs = tmp_path / "runs"
    run_suite(load_suite(suite_file), runs, device="cpu")
    (folder,) = (runs / "aux").glob("denoiser-*")
    stamp = (folder / "checkpoint.pt").stat().st_mtime_ns
    records = [json.loads(p.read_text()) for p in (runs / "jobs").glob("*/results/score_alignment*.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert {a["hash"] for r in records for a in r["auxiliary"]} == {folder.name.split("-", 1)[1]}
    identity = json.loads((folder / "identity.json").read_text())["identity"]
    assert identity["data"]["name"] == "gaussian_mixture" and identity["data"]["config"]["train_size"] == 300
    # a new job on the same dataset (another evaluation in a new process) loads it
    suite = load_suite(suite_file)
    aux = AuxiliaryModels(runs / "aux")
    bundle = gibench.load_dataset("gaussian_mixture", **dataset["gaussian_mixture"])
    evaluator = gibench.create_evaluator("score_alignment", **options)
    for job in expand(suite):
        assert data_identity(ctx(nn.Identity(), bundle, tmp_path, aux, job)) == identity["data"]
        evaluator.score_function(ctx(nn.Identity(), bundle, tmp_path, aux, job))
    assert aux.trained == [] and (folder / "checkpoint.pt").stat().st_mtime_ns == stamp


# -- analytic, auto and the user's mistakes --------------------------------------------------------------------------


def test_auto_uses_the_analytic_score_where_there_is_one(mixture, tmp_path):
    bayes = BayesClassifier(mixture.extras["density"])
    aux = AuxiliaryModels(tmp_path / "aux")
    auto = ScoreAlignment(ScoreAlignment.Config(max_images=50)).evaluate(ctx(bayes, mixture, tmp_path, aux))
    analytic = ScoreAlignment(ScoreAlignment.Config(max_images=50, score="analytic")).evaluate(
        ctx(bayes, mixture, tmp_path, aux))
    assert auto.scalars == analytic.scalars and auto.scalars["cosine_conditional"] == pytest.approx(1.0, abs=1e-5)
    assert aux.trained == [] and not (tmp_path / "aux").exists()


def test_analytic_without_the_capability_is_skipped_by_the_runner_and_an_error_directly(small_bundle, tmp_path):
    assert ScoreAlignment.requires == frozenset()
    assert gibench.create_evaluator("score_alignment", score="analytic").requires == frozenset({ANALYTIC_SCORE})
    assert gibench.create_evaluator("score_alignment").requires == frozenset()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(GibenchError, match="score: analytic.*'mnist_small' has none.*score: learned"):
        gibench.create_evaluator("score_alignment", score="analytic").evaluate(ctx(model, small_bundle, tmp_path))
    suite_file = write_suite(tmp_path, evaluators=[{"score_alignment": {"score": "analytic"}}],
                             regularizers=["erm"])
    run_suite(load_suite(suite_file), tmp_path / "runs", device="cpu")
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "jobs").glob("*/results/score_alignment*")]
    assert result["status"] == "skipped" and "analytic_score" in result["reason"]


def test_a_poor_denoiser_fails_the_evaluation_with_its_figure(mixture, tmp_path):
    options = {**LEARNED, "denoiser_epochs": 1, "denoiser_max_train": 100, "min_denoiser_gain": 0.99}
    evaluator = ScoreAlignment(ScoreAlignment.Config(**options))
    with pytest.raises(GibenchError, match="gain_over_trivial = .* below the floor 0.99"):
        evaluator.evaluate(ctx(BayesClassifier(mixture.extras["density"]), mixture, tmp_path))


@pytest.mark.parametrize("params, message", [
    ({"score": "exact"}, "score must be one of"),
    ({"sigma": 0.0}, "sigma"),
    ({"denoiser_width": 12}, "multiple of 8"),
    ({"denoiser_epochs": 0}, "epochs"),
    ({"denoiser_uncond_prob": 1.0}, "uncond_prob"),
    ({"min_denoiser_gain": 1.0}, "min_denoiser_gain"),
    ({"lpips_weights": "/nonexistent/lpips"}, "alex.pth.*never downloads"),
])
def test_bad_options_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        gibench.create_evaluator("score_alignment", **params)


# -- LPIPS, from local weights only ----------------------------------------------------------------------------------


@pytest.fixture
def lpips_folder(tmp_path) -> Path:
    """Random (not ImageNet) AlexNet and LPIPS head weights in the two files the option expects."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), tmp_path / LPIPS_FILES[1])
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPSAlex.CHANNELS)}
    torch.save(heads, tmp_path / LPIPS_FILES[0])
    return tmp_path


def test_lpips_similarity_is_one_for_maps_equal_up_to_scale_and_lower_otherwise(lpips_folder):
    lpips = LPIPSAlex(lpips_folder)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    assert torch.allclose(lpips_similarity(lpips, a, 3.0 * a), torch.ones(4, dtype=torch.float64))
    different = lpips_similarity(lpips, a, b)
    assert (different < 0.99).all()
    assert torch.allclose(lpips_similarity(lpips, a, b), lpips_similarity(lpips, 5.0 * a, b))


def test_lpips_metrics_are_added_only_with_local_weights(mixture, lpips_folder, tmp_path):
    evaluator = gibench.create_evaluator("score_alignment", max_images=30, lpips_weights=str(lpips_folder))
    assert {m.name for m in evaluator.metrics} >= {"lpips_conditional", "lpips_unconditional"}
    assert "lpips_conditional" not in {m.name for m in ScoreAlignment.metrics}
    bayes = BayesClassifier(mixture.extras["density"])
    aligned = evaluator.evaluate(ctx(bayes, mixture, tmp_path / "a")).scalars
    assert aligned["lpips_conditional"] == pytest.approx(1.0, abs=1e-5)  # the gradient is the score
    shifted = evaluator.evaluate(ctx(Shifted(bayes, 64), mixture, tmp_path / "b")).scalars
    assert shifted["lpips_conditional"] < aligned["lpips_conditional"] - 0.05
