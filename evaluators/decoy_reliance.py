"""``decoy_reliance``: how much a model relies on a decoy that gave the label away in training, and how much of its
saliency lies on the decoy.

Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by Constraining their
Explanations" (IJCAI 2017), the Decoy MNIST experiment (public code dtak/rrr, ``rrr/decoy_mnist.py`` and
``experiments/Decoy MNIST.ipynb``): a model trained where a corner swatch's shade encodes the label learns the
swatch; on test images whose swatch shade is random its accuracy drops, and its input gradients sit on the swatch.
Their "right reasons" penalty (λ·Σ (A ⊙ ∂ log p/∂x)², A the annotation of irrelevant pixels) restores test accuracy and
moves the gradients off the swatch. The paper reports test accuracy and shows gradients; gibench defines these
explicit metrics on any dataset with the ``IRRELEVANT_MASK`` and ``DECOY_SHORTCUT`` capabilities
(``gibench.data.decoy_mnist``):

* ``decoy_saliency_share`` (headline, lower is better, in [0, 1]): per image, the share of the pixel-score mass on
  the annotated irrelevant pixels, Σ_mask s / Σ_all s, averaged over images: how much of the map points at the decoy.
  An all-zero map gets the mask's share of the pixels (the value of a uniform map). A model right for the right
  reasons has a faithful map with little mass there. Read it beside ``shortcut_gap``: a map that is not faithful
  can put little mass on the decoy while the model relies on it. The ``fooled`` control does (``gibench_mlp``,
  3 epochs on the bundled digits, seed 0: share 0.033 against erm's 0.090, while its gap is 0.14 against 0.34), so
  on a dataset where ``erm`` learns the decoy the sanity gate can find ``fooled`` better on this headline.
* ``decoy_area_share`` (reference, diagnostic: never ranks): the mask's share of the image, Σ_mask 1 / (H·W) averaged
  over images (16/784 ≈ 0.0204 on Decoy MNIST), the share a uniform map would put on the decoy.
* ``accuracy_uninformative`` (higher is better): top-1 accuracy on the test images, whose decoy is uninformative
  (random shade on Decoy MNIST): the paper's test accuracy.
* ``accuracy_consistent`` (higher is better): top-1 accuracy on the same test images with the decoy drawn
  by the training rule from their label (``extras["decoy_shortcut"]``).
* ``shortcut_gap`` (lower is better, in [−1, 1]): ``accuracy_consistent − accuracy_uninformative``, the model's
  reliance on the decoy in accuracy points; about 0 for a model that ignores it.

Choices: the saliency is ``ctx.saliency`` (the input-gradient of the true label's logit, the evaluator's ``saliency``
option; the paper penalizes the gradient of the summed log-probabilities, which gibench does not use for evaluation:
docs/architecture.md, "Saliency"), aggregated per pixel by ``pixel_reduction`` (Σ_c |g_c| by default), on the test
images (uninformative decoy), so the map is read where the decoy cannot help; the first ``max_images`` test images
(default all) for every metric. The saliency share is judged by the ``fooled`` sanity control like every saliency
headline (``judges_saliency``); the accuracies are model properties that do not read the map. Cost: one saliency map
per image and two forwards (test and shortcut images); the rest is batched tensor arithmetic.
"""

from __future__ import annotations

__all__ = ["DecoyReliance", "DecoyRelianceConfig"]

import torch
from torch import Tensor

from gibench.api.artifacts import batches, eval_subset, save_grid, to_unit
from gibench.api.cost import CostContext, EvaluationCost, work
from gibench.api.plugin import DECOY_SHORTCUT, IRRELEVANT_MASK, EvalContext, EvalResult, Evaluator, Metric
from gibench.api.saliency import SaliencyOptions, mask_mass_share, pixel_scores
from gibench.core.config_types import ChannelReduction, Limit, plugin_config


@plugin_config
class DecoyRelianceConfig(SaliencyOptions):
    pixel_reduction: ChannelReduction = "abs_sum"
    """How the gradient's channels become one score per pixel."""
    max_images: Limit = 0
    """The first N test images; 0 = all."""


class DecoyReliance(Evaluator):
    """Share of the saliency on the decoy (headline), accuracies with an uninformative and a label-consistent decoy,
    and their gap."""

    Config = DecoyRelianceConfig
    version = "1"
    history = {"1": "first version: per-image share of the abs_sum saliency mass on the irrelevant mask (headline), "
                    "the mask's area share, accuracy on the test images and on their decoy_shortcut twins and the "
                    "gap, on the first max_images test images (default all)"}
    requires = frozenset({IRRELEVANT_MASK, DECOY_SHORTCUT})
    metrics = (
        Metric("decoy_saliency_share", False, "share of the pixel-saliency mass on the decoy (the pixels annotated "
               "irrelevant), test images", headline=True, bounds=(0.0, 1.0)),
        Metric("decoy_area_share", False, "the decoy's share of the image area: what a uniform map puts on it "
               "(reference)", bounds=(0.0, 1.0), diagnostic=True),
        Metric("accuracy_uninformative", True, "top-1 accuracy on the test images, whose decoy is uninformative",
               bounds=(0.0, 1.0)),
        Metric("accuracy_consistent", True, "top-1 accuracy on the test images with the decoy the training rule "
               "draws from their label", bounds=(0.0, 1.0)),
        Metric("shortcut_gap", False, "accuracy_consistent − accuracy_uninformative: reliance on the decoy",
               bounds=(-1.0, 1.0)),
    )

    def cost(self, ctx: CostContext) -> EvaluationCost:
        """One saliency map and two forwards per evaluated image (nothing on a dataset without the decoy: skipped)."""
        if not self.requires <= ctx.data.capabilities:
            return EvaluationCost()
        n = ctx.images(self.config.max_images)
        return EvaluationCost(work((ctx.saliency(), n * self.config.input_gradients_per_map),
                                   (ctx.forward(), 2 * n)))

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        cfg = self.config
        x, y, extras = eval_subset(ctx, cfg.max_images)
        masks, shortcut = extras[IRRELEVANT_MASK], extras[DECOY_SHORTCUT]
        shares, areas = [], []
        hits_uninformative, hits_consistent = 0, 0
        grid: list[Tensor] = []
        for sl in batches(len(y), ctx.batch_size):
            xb, yb = x[sl].to(ctx.device), y[sl].to(ctx.device)
            mb = masks[sl].to(ctx.device)[:, 0]
            with torch.no_grad():
                hits_uninformative += int((ctx.model(xb).argmax(1) == yb).sum())
                hits_consistent += int((ctx.model(shortcut[sl].to(ctx.device)).argmax(1) == yb).sum())
            scores = pixel_scores(ctx.saliency(ctx.model, xb, yb).detach(), cfg.pixel_reduction)
            shares.append(mask_mass_share(scores, mb))
            areas.append(mb.flatten(1).double().mean(1))
            if not grid:
                grid = [xb[:8].cpu(), to_unit(scores[:8].unsqueeze(1)).cpu(), mb[:8].unsqueeze(1).float().cpu()]
        n = max(len(y), 1)
        uninformative, consistent = hits_uninformative / n, hits_consistent / n
        scalars = {
            "decoy_saliency_share": float(torch.cat(shares).mean()),
            "decoy_area_share": float(torch.cat(areas).mean()),
            "accuracy_uninformative": float(uninformative),
            "accuracy_consistent": float(consistent),
            "shortcut_gap": float(consistent - uninformative),
        }
        artifacts = {"saliency_grid": save_grid(ctx, "decoy_saliency.png", grid)} if grid else {}
        return EvalResult(scalars=scalars, artifacts=artifacts)
