"""The example plugin passes gibench's conformance checks: the same ones gibench runs on its built-ins.

Run them in CI with ``pip install gibench . pytest && pytest tests/`` (no GPU, no gibench source checkout needed).
"""

import torch
from gibench_example_plugin import GradientL1, TopPixelShare

from gibench import create_evaluator
from gibench.testing import check_evaluator, check_regularizer, make_eval_context, tiny_bundle, tiny_model


def test_gradient_l1_conforms():
    check_regularizer(GradientL1)  # by class: works before the package is installed
    check_regularizer(GradientL1, params={"weight": 0.5})


def test_top_pixel_share_conforms():
    check_evaluator(TopPixelShare, params={"max_images": 32})


def test_top_pixel_share_declares_one_saliency_pass_per_image():
    from types import SimpleNamespace

    from gibench import CostContext, DataSizes

    ctx = CostContext(SimpleNamespace(backbone="net"), DataSizes((1, 8, 8), 2, n_train=100, n_test=40), batch_size=16)
    assert dict(TopPixelShare().cost(ctx).per_job) == {ctx.saliency(): 40}  # max_images 500 > the 40 test images


def test_the_entry_points_resolve_to_the_classes():
    check_regularizer("gradient_l1")  # by its registered name: needs `pip install .`
    assert type(create_evaluator("top_pixel_share")) is TopPixelShare


def test_top_pixel_share_of_a_one_pixel_saliency_is_one(tmp_path):
    """A model whose label logit depends on one pixel only puts all the saliency there: share 1, spread 0."""
    bundle = tiny_bundle()

    class OnePixel(torch.nn.Module):
        def forward(self, x):
            return x[:, 0, 0, :1].repeat(1, 3) * torch.tensor([1.0, 2.0, 3.0])

    result = TopPixelShare().evaluate(make_eval_context(OnePixel(), bundle, tmp_path))
    assert result.scalars == {"top_pixel_share": 1.0, "top_pixel_share_std": 0.0}
    spread = TopPixelShare(TopPixelShare.Config(top_fraction=1.0)).evaluate(
        make_eval_context(tiny_model(bundle), bundle, tmp_path))
    assert abs(spread.scalars["top_pixel_share"] - 1.0) < 1e-12  # all pixels: the whole mass
