"""The synthetic datasets: ``gaussian_mixture`` (exact score, density, Bayes classifier) and ``blockmnist``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gibench
from gibench.api.plugin import ANALYTIC_SCORE, SIGNAL_MASK
from gibench.core.errors import ConfigError, DataError
from gibench.data.blockmnist import BlockMNIST, BlockMNISTConfig, BlockMNISTTop, compose, null_pattern, placements
from gibench.data.bundled import MNISTSubset
from gibench.data.gaussian_mixture import BayesClassifier, GaussianMixture, GaussianMixtureConfig

# ----------------------------------------------------------------------------------------------------------------------
# gaussian_mixture

SMALL = dict(num_classes=4, channels=2, height=3, width=4, train_size=400, test_size=300)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture(GaussianMixtureConfig(**SMALL)).load()


def _independent_log_likelihood(x: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag sd²) summed over coordinates, via torch.distributions."""
    return torch.distributions.Normal(mu, sd).log_prob(x).flatten(1).sum(1)


def test_mixture_shapes_capability_and_range(mixture):
    assert mixture.train.x.shape == (400, 2, 3, 4) and mixture.test.x.shape == (300, 2, 3, 4)
    assert mixture.num_classes == 4 and mixture.capabilities == frozenset({ANALYTIC_SCORE})
    assert float(mixture.train.x.min()) >= 0.0 and float(mixture.train.x.max()) <= 1.0
    assert set(mixture.train.y.tolist()) == {0, 1, 2, 3}
    for key in ("score", "log_prob", "bayes_logits", "density"):
        assert key in mixture.extras


def test_mixture_is_deterministic_and_seeded(mixture):
    again = GaussianMixture(GaussianMixtureConfig(**SMALL)).load()
    assert torch.equal(again.train.x, mixture.train.x) and torch.equal(again.test.y, mixture.test.y)
    other = GaussianMixture(GaussianMixtureConfig(**SMALL, seed=1)).load()
    assert not torch.equal(other.train.x, mixture.train.x)
    # the parameters do not depend on the split sizes
    bigger = GaussianMixture(GaussianMixtureConfig(**{**SMALL, "train_size": 500})).load()
    assert torch.equal(bigger.extras["density"].means, mixture.extras["density"].means)


def test_mixture_samples_follow_their_parameters():
    cfg = GaussianMixtureConfig(num_classes=2, channels=1, height=2, width=2, train_size=20000, test_size=10)
    bundle = GaussianMixture(cfg).load()
    density = bundle.extras["density"]
    x, y = bundle.train.x.double(), bundle.train.y
    for k in range(2):
        xk = x[y == k]
        n = len(xk)
        assert abs(n / len(y) - 0.5) < 0.02  # uniform prior
        # the sample mean is within 5 standard errors of μ_k; the sample std within 5% of σ_k
        assert torch.all((xk.mean(0) - density.means[k]).abs() < 5 * density.stds[k] / math.sqrt(n))
        assert torch.allclose(xk.std(0), density.stds[k], rtol=0.05)
    # parameters lie in the documented ranges
    assert float(density.means.min()) >= 0.3 and float(density.means.max()) <= 0.7
    assert float(density.stds.min()) >= 0.02 and float(density.stds.max()) <= 0.05


def test_isotropic_covariance_has_one_sigma_per_class():
    density = GaussianMixture(GaussianMixtureConfig(**SMALL, covariance="isotropic")).load().extras["density"]
    for k in range(4):
        assert torch.all(density.stds[k] == density.stds[k].flatten()[0])
    assert len(set(density.stds[:, 0, 0, 0].tolist())) == 4


def test_log_prob_and_bayes_logits_match_independent_gaussians(mixture):
    density = mixture.extras["density"]
    x = mixture.test.x[:50].double()
    ll = torch.stack([_independent_log_likelihood(x, density.means[k], density.stds[k]) for k in range(4)], 1)
    assert torch.allclose(density.class_log_likelihoods(x), ll, atol=1e-10)
    logits = mixture.extras["bayes_logits"](x)
    assert torch.allclose(logits, ll - math.log(4), atol=1e-10)
    y = mixture.test.y[:50]
    assert torch.allclose(mixture.extras["log_prob"](x, y), ll.gather(1, y.view(-1, 1)).squeeze(1), atol=1e-10)
    marginal = torch.logsumexp(ll, 1) - math.log(4)
    assert torch.allclose(mixture.extras["log_prob"](x, None), marginal, atol=1e-10)


def test_score_is_the_gradient_of_the_log_density(mixture):
    score = mixture.extras["score"]
    x = mixture.test.x[:40].double().requires_grad_(True)
    y = mixture.test.y[:40]
    for labels in (y, None):
        (autograd,) = torch.autograd.grad(mixture.extras["log_prob"](x, labels).sum(), x)
        assert torch.allclose(score(x.detach(), labels), autograd, atol=1e-8)
    # the score works on float32 too and keeps the dtype
    assert score(mixture.test.x[:4], mixture.test.y[:4]).dtype == torch.float32


def test_bayes_classifier_predicts_the_maximum_posterior(mixture):
    density = mixture.extras["density"]
    model = BayesClassifier(density)
    x = mixture.test.x.double()
    expected = torch.stack(
        [_independent_log_likelihood(x, density.means[k], density.stds[k]) for k in range(4)], 1
    ).argmax(1)
    assert torch.equal(model(x).argmax(1), expected)
    assert float((expected == mixture.test.y).double().mean()) > 0.99  # the default classes are well separated


def test_mixture_config_errors():
    with pytest.raises(ConfigError, match="sigma_max"):
        gibench.load_dataset("gaussian_mixture", sigma_max=0.2)
    with pytest.raises(ConfigError, match="covariance"):
        gibench.load_dataset("gaussian_mixture", covariance="full")
    with pytest.raises(ValueError, match="num_classes"):
        GaussianMixtureConfig(num_classes=1)


# ----------------------------------------------------------------------------------------------------------------------
# blockmnist


@pytest.fixture(scope="module")
def source():
    return MNISTSubset().load()


@pytest.fixture(scope="module")
def block(source):
    return BlockMNIST().load()


def test_null_pattern_is_a_centred_square_outline():
    p = null_pattern()
    assert p.shape == (1, 28, 28) and set(p.unique().tolist()) == {0.0, 1.0}
    assert int(p.sum()) == 12 * 12 - 8 * 8
    rows = p[0].sum(1).nonzero().flatten().tolist()
    assert rows == list(range(8, 20)) and p[0, 10:18, 10:18].sum() == 0
    assert torch.equal(p[0], p[0].T) and torch.equal(p[0], p[0].flip(0))  # centred and symmetric


def test_blockmnist_layout_mask_and_labels(block, source):
    assert block.capabilities == frozenset({SIGNAL_MASK})
    for split, base in ((block.train, source.train), (block.test, source.test)):
        assert split.x.shape == (len(base), 1, 56, 28)
        assert torch.equal(split.y, base.y)
        mask = split.extras["signal_mask"]
        assert mask.dtype == torch.bool and mask.shape == split.x.shape
        top = mask[:, 0, 0, 0]
        # the mask covers exactly one whole block
        assert torch.equal(mask[:, :, :28].all(dim=(1, 2, 3)), top)
        assert torch.equal(mask[:, :, 28:].all(dim=(1, 2, 3)), ~top)
        assert not bool((mask[:, :, :28].any(dim=(1, 2, 3)) & mask[:, :, 28:].any(dim=(1, 2, 3))).any())
        # the signal block holds the source digit, the other block the null pattern
        digit = torch.where(top.view(-1, 1, 1, 1), split.x[:, :, :28], split.x[:, :, 28:])
        null = torch.where(top.view(-1, 1, 1, 1), split.x[:, :, 28:], split.x[:, :, :28])
        assert torch.equal(digit, base.x)
        assert torch.equal(null, null_pattern().expand_as(null))
    both = torch.cat([block.train.extras["signal_mask"][:, 0, 0, 0], block.test.extras["signal_mask"][:, 0, 0, 0]])
    assert abs(float(both.double().mean()) - 0.5) < 0.03
    assert torch.equal(both, placements(len(both), 0))


def test_blockmnist_is_deterministic_and_placement_is_seeded(block):
    again = BlockMNIST().load()
    assert torch.equal(again.test.x, block.test.x)
    other = BlockMNIST(BlockMNISTConfig(placement_seed=3)).load()
    assert not torch.equal(other.test.extras["signal_mask"], block.test.extras["signal_mask"])


def test_blockmnist_top_control(source):
    top = BlockMNISTTop().load()
    assert top.name == "blockmnist_top"
    mask = top.test.extras["signal_mask"]
    assert bool(mask[:, :, :28].all()) and not bool(mask[:, :, 28:].any())
    assert torch.equal(top.test.x[:, :, :28], source.test.x)


def test_blockmnist_classes_restrict_and_relabel(source):
    bundle = gibench.load_dataset("blockmnist", classes=[3, 1])
    assert bundle.num_classes == 2 and bundle.class_names == ("3", "1")
    keep = (source.test.y == 3) | (source.test.y == 1)
    assert torch.equal(bundle.test.y, (source.test.y[keep] == 1).long())
    assert len(bundle.train) == int(((source.train.y == 3) | (source.train.y == 1)).sum())


def test_compose_places_the_digit():
    digits = torch.rand(2, 1, 28, 28)
    images, mask = compose(digits, torch.tensor([True, False]))
    assert torch.equal(images[0, :, :28], digits[0]) and torch.equal(images[1, :, 28:], digits[1])
    assert mask[0, :, :28].all() and not mask[0, :, 28:].any() and mask[1, :, 28:].all()


def test_blockmnist_config_errors():
    with pytest.raises(ConfigError, match="source"):
        gibench.load_dataset("blockmnist", source="emnist")
    with pytest.raises(ValueError, match="classes"):
        BlockMNISTConfig(classes=(1,))
    with pytest.raises(ValueError, match="classes"):
        BlockMNISTConfig(classes=(1, 12))


def _write_idx(path, array: np.ndarray) -> None:
    """An IDX file (the MNIST raw format): magic (ubyte, ndim), big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_blockmnist_from_full_mnist_in_the_data_root(tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    digits = {split: rng.integers(0, 256, size=(n, 28, 28)) for split, n in (("train", 30), ("t10k", 12))}
    labels = {split: np.arange(len(d)) % 10 for split, d in digits.items()}
    for split in digits:
        _write_idx(raw / f"{split}-images-idx3-ubyte", digits[split])
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels[split])
    bundle = gibench.load_dataset("blockmnist", data_root=tmp_path, source="mnist", classes=[2, 7])
    keep = np.isin(labels["t10k"], [2, 7])
    expected = torch.from_numpy(digits["t10k"][keep]).float().div(255).unsqueeze(1)
    top = bundle.test.extras["signal_mask"][:, 0, 0, 0].view(-1, 1, 1, 1)
    assert torch.equal(torch.where(top, bundle.test.x[:, :, :28], bundle.test.x[:, :, 28:]), expected)
    assert bundle.test.y.tolist() == [0 if v == 2 else 1 for v in labels["t10k"][keep]]


def test_blockmnist_from_missing_mnist_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="mnist"):
        gibench.load_dataset("blockmnist", data_root=tmp_path, source="mnist")
