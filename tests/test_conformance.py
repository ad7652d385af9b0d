"""Conformance of every registered plugin, through the checks plugin authors run in their own CI (gibench.testing).

Parametrized over the registries, so a new built-in or an installed third-party plugin is checked with no new code.
The second half proves that each check can fail: deliberately broken plugins, each caught with a message naming
what is wrong.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import gibench
from gibench.api import registry
from gibench.api.artifacts import save_curves
from gibench.api.plugin import EvalResult, Evaluator, Metric, Regularizer, Sweep, TrainingLoss
from gibench.testing import (
    ConformanceError,
    check_evaluator,
    check_regularizer,
    make_eval_context,
    tiny_bundle,
    tiny_model,
)

#: Settings that keep the evaluators that train or sample within seconds on the tiny bundle. Every registered
#: evaluator is checked (with its defaults unless listed): this only chooses affordable parameters.
AFFORDABLE = {
    "gan_test": {"num_samples": 30, "steps": 20, "judge_epochs": 3},
    "diffroar": {"levels": [0.5], "retrain_seeds": [0], "backbone": "gibench_linear",
                 "train": {"epochs": 1, "batch_size": 64, "lr": 1.0e-2}},
}


@pytest.mark.parametrize("name", registry.regularizers.names())
def test_every_registered_regularizer_conforms(name):
    check_regularizer(name)


def _evaluator_cases():
    return registry.evaluators.names()


@pytest.mark.parametrize("name", _evaluator_cases())
def test_every_registered_evaluator_conforms(name):
    check_evaluator(name, params=AFFORDABLE.get(name))


def test_diffroar_conforms_on_a_model_without_batchnorm():
    bundle = tiny_bundle()
    check_evaluator("diffroar", params=AFFORDABLE["diffroar"], bundle=bundle,
                    model=tiny_model(bundle, batch_norm=False))


def test_tiny_bundle_has_its_signal_only_in_the_masked_block():
    bundle = tiny_bundle()
    density = bundle.extras["density"]
    mask = bundle.test.extras["signal_mask"][0, 0]
    means = density.means  # (K, C, H, W)
    assert mask[:4].all() and not mask[4:].any()
    assert torch.equal(means[0, :, 4:], means[1, :, 4:]) and torch.equal(means[1, :, 4:], means[2, :, 4:])
    assert (means[:, :, :4].amax(0) - means[:, :, :4].amin(0)).min() > 0.1
    x, y = bundle.test.x.double(), bundle.test.y
    torch.testing.assert_close(bundle.extras["score"](x, y), -(x - means[y]) / 0.05 ** 2)
    assert (bundle.extras["bayes_logits"](x).argmax(1) == y).all()
    assert torch.bincount(bundle.train.y).tolist() == [80, 80, 80]
    assert 0.0 <= bundle.train.x.min() and bundle.train.x.max() <= 1.0


def test_make_eval_context_puts_the_model_in_eval_mode(tmp_path):
    bundle = tiny_bundle()
    ctx = make_eval_context(tiny_model(bundle), bundle, tmp_path / "art", batch_size=7, seed=3)
    assert not ctx.model.training and ctx.batch_size == 7 and ctx.seed == 3 and ctx.artifact_dir.is_dir()
    assert ctx.device == torch.device("cpu") and ctx.job is None


# ----------------------------------------------------------------------------------------------------------------------
# Each check can fail


@dataclasses.dataclass(frozen=True)
class WeightConfig:
    weight: float = 1.0


class _Base(Regularizer):
    Config = WeightConfig

    def penalty(self, model, x, y, logits):
        return logits.pow(2).mean()

    def training_loss(self, model, x, y):
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        penalty = self.penalty(model, x, y, logits)
        parts = {"cross_entropy": ce.detach(), "penalty": penalty.detach()}
        return TrainingLoss(ce + self.config.weight * penalty, parts)


class ReadsOnTheHost(_Base):
    def penalty(self, model, x, y, logits):
        return logits.pow(2).mean() * (1.0 if logits.sum().item() > -1e9 else 0.0)


class PartNotDetached(_Base):
    def training_loss(self, model, x, y):
        loss = super().training_loss(model, x, y)
        return TrainingLoss(loss.total, {**loss.parts, "penalty": loss.total})


class ZeroWeightIsNotErm(_Base):
    def training_loss(self, model, x, y):
        loss = super().training_loss(model, x, y)
        return TrainingLoss(loss.total + 1e-3 * model(x).abs().mean(), loss.parts)


class LeavesEvalMode(_Base):
    def penalty(self, model, x, y, logits):
        model.eval()
        return model(x + 0.01).pow(2).mean()


class DetachesTheGraph(_Base):
    def training_loss(self, model, x, y):
        loss = super().training_loss(model, x, y)
        return TrainingLoss(loss.total.detach(), loss.parts)


class SkipsALayer(_Base):
    def training_loss(self, model, x, y):
        features = model[:-1](x)
        logits = features @ torch.ones(features.shape[1], 3)  # the last layer's parameters get no gradient
        ce = F.cross_entropy(logits, y)
        return TrainingLoss(ce, {"cross_entropy": ce.detach()})


class ChangesTheBatch(_Base):
    def penalty(self, model, x, y, logits):
        x.mul_(0.5)
        return logits.pow(2).mean()


class BlowsUpWhenStrong(_Base):
    """Finite at its default (weight 1) and at the weakest sweep value, infinite at the strongest (weight 2)."""

    sweep = Sweep("weight", (0.5, 1.0, 2.0), "linear", "its last value divides by zero")

    def penalty(self, model, x, y, logits):
        return logits.pow(2).mean() / (2.0 - self.config.weight)


@pytest.mark.parametrize(("cls", "failure"), [
    (BlowsUpWhenStrong, "finite scalar total with gradients at the strongest sweep value (weight = 2.0): total = inf"),
    (ReadsOnTheHost, "no host synchronization in a step: regularizer ReadsOnTheHost reads a tensor value on the host"),
    (PartNotDetached, "parts are detached finite 0-dim tensors: part 'penalty' is not detached"),
    (ZeroWeightIsNotErm, "zero strength equals erm exactly: zero_strength {'weight': 0.0} gives total"),
    (LeavesEvalMode, "module modes restored: module train/eval flags changed"),
    (DetachesTheGraph, "finite scalar total with gradients on every parameter: total has no autograd graph"),
    (SkipsALayer, "finite scalar total with gradients on every parameter: no gradient reaches parameter(s) "
                  "['4.weight', '4.bias']"),
    (ChangesTheBatch, "input batch unchanged: training_loss modified its input batch in place"),
])
def test_check_regularizer_names_each_broken_rule(cls, failure):
    with pytest.raises(ConformanceError) as caught:
        check_regularizer(cls)
    assert any(line.startswith(failure) for line in caught.value.failures), caught.value.failures
    assert str(caught.value).startswith(f"regularizer {cls.__qualname__} fails")


def test_check_regularizer_lists_every_failure_at_once():
    class Everything(ReadsOnTheHost, PartNotDetached):
        pass

    with pytest.raises(ConformanceError) as caught:
        check_regularizer(Everything)
    checks = {line.split(":")[0] for line in caught.value.failures}
    assert {"no host synchronization in a step", "parts are detached finite 0-dim tensors"} <= checks


def test_check_regularizer_reports_bad_declarations_first():
    class Undeclared(_Base):
        zero_strength = {"strength": 0.0}

    with pytest.raises(ConformanceError, match=r"declarations: its zero_strength names 'strength', which its Config "
                                               r"lacks"):
        check_regularizer(Undeclared)


def test_checks_refuse_what_is_not_a_plugin_of_their_kind():
    with pytest.raises(TypeError, match="expected a registered regularizer name or a subclass of gibench.Regularizer"):
        check_regularizer(_Counts)
    with pytest.raises(gibench.UnknownPluginError, match="unknown evaluator 'acuracy'. Did you mean 'accuracy'"):
        check_evaluator("acuracy")


def test_check_regularizer_passes_params_and_batch():
    check_regularizer(_Base, params={"weight": 0.5}, model_factory=lambda: tiny_model(in_chans=3, image_size=(5, 5)),
                      batch=(torch.rand(4, 3, 5, 5), torch.tensor([0, 1, 2, 0])))


class _Counts(Evaluator):
    """Counts the test images; a base for broken evaluators."""

    metrics = (Metric("count", True, "test images", headline=True), Metric("share", True, "share of class 0"))

    def scalars(self, ctx):
        y = ctx.data.test.y
        return {"count": float(len(y)), "share": float((y == 0).double().mean())}

    def evaluate(self, ctx):
        return EvalResult(self.scalars(ctx))


class MissesAMetric(_Counts):
    def evaluate(self, ctx):
        return EvalResult({"count": 1.0})


class ReturnsATensor(_Counts):
    def evaluate(self, ctx):
        return EvalResult({**self.scalars(ctx), "share": torch.tensor(0.5)})


class TrainsTheModel(_Counts):
    def evaluate(self, ctx):
        with torch.no_grad():
            next(ctx.model.parameters()).add_(1.0)
        return super().evaluate(ctx)


class DependsOnTheBatchSize(_Counts):
    def evaluate(self, ctx):
        return EvalResult({**self.scalars(ctx), "share": 1.0 / ctx.batch_size})


class NotDeterministic(_Counts):
    def evaluate(self, ctx):
        return EvalResult({**self.scalars(ctx), "share": float(torch.rand(()))})


class MissingArtifact(_Counts):
    def evaluate(self, ctx):
        return EvalResult(self.scalars(ctx), artifacts={"curve": "never_written.json"})


class WritesOutside(_Counts):
    def evaluate(self, ctx):
        from gibench.api.plugin import Curve

        save_curves(ctx, "curve.json", {"c": Curve((0.0,), (1.0,))})
        return EvalResult(self.scalars(ctx), artifacts={"curve": "../curve.json"})


class NeedsAnUnknownThing(_Counts):
    requires = frozenset({"depth_map"})


@pytest.mark.parametrize(("cls", "failure"), [
    (MissesAMetric, "declared metrics returned as finite floats: scalars ['count'] differ from the declared metrics "
                    "['count', 'share'] (missing ['share'], undeclared [])"),
    (ReturnsATensor, "declared metrics returned as finite floats: metric 'share' is a Tensor, not a float"),
    (TrainsTheModel, "model left in eval mode and unchanged: evaluate changed the model's ['0.weight']"),
    (DependsOnTheBatchSize, "independent of the batch size: metric (first, second) values differ: {'share': "
                            "(0.0625, 0.1111111111111111)}"),
    (NotDeterministic, "same seed, same numbers: metric (first, second) values differ: {'share'"),
    (MissingArtifact, "artifacts written where declared: artifact 'curve': 'never_written.json' is missing or empty"),
    (WritesOutside, "artifacts written where declared: artifact 'curve' ('../curve.json') is not a file name inside "
                    "ctx.artifact_dir"),
    (NeedsAnUnknownThing, "declarations: it requires the unknown capability 'depth_map'."),
])
def test_check_evaluator_names_each_broken_rule(cls, failure):
    with pytest.raises(ConformanceError) as caught:
        check_evaluator(cls)
    assert any(line.startswith(failure) for line in caught.value.failures), caught.value.failures


def test_a_conforming_evaluator_passes_and_capabilities_are_checked_against_the_bundle():
    check_evaluator(_Counts)

    class NeedsMask(_Counts):
        requires = frozenset({"signal_mask"})

    from gibench.data.tensors import make_bundle

    plain = tiny_bundle()
    no_mask = make_bundle("plain", plain.train.x, plain.train.y, plain.test.x, plain.test.y, num_classes=3)
    with pytest.raises(ConformanceError, match=r"capabilities: the dataset lacks \['signal_mask'\]"):
        check_evaluator(NeedsMask, bundle=no_mask)
