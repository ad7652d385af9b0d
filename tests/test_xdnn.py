"""X-DNN backbones (``bias: false``, Hesse et al. 2021) and the homogeneity check that guards them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gibench
from gibench.api.saliency import attribution_baseline
from gibench.core.errors import ConfigError
from gibench.testing import trained_model
from gibench.training.cifar_backbones import VGG11_LAYERS, CifarVGG11BN, CifarXResNet18, XBasicBlock
from gibench.training.homogeneity import check_homogeneous, non_homogeneous_layers
from gibench.training.models import build_model, create_backbone, in_tree_backbones

CONV_NETS = ("gibench_cnn", "cifar_resnet18", "cifar_vgg11_bn")


def _randomized(model: nn.Module, seed: int = 1) -> nn.Module:
    """A float64 copy with every parameter redrawn (the zero-initialised Fixup branches would make f ≡ 0)."""
    model = model.double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / max(1, p[0].numel()) ** 0.5)
    return model


def _scaling_error(model: nn.Module, z: torch.Tensor, alpha: float) -> float:
    with torch.no_grad():
        out = model(z)
        return ((model(alpha * z) - alpha * out).abs().max() / (alpha * out.abs().max())).item()


@pytest.mark.parametrize("name", in_tree_backbones())
def test_every_in_tree_backbone_has_an_x_variant_without_bias_or_batchnorm(name: str) -> None:
    model = create_backbone(name, num_classes=5, in_chans=3, bias=False)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert not [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert not [m for m in model.modules() if isinstance(m, (nn.Softplus, nn.GELU, nn.SiLU, nn.Tanh))]
    size = 28 if name in ("gibench_mlp", "gibench_linear") else 16
    z = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = _randomized(model)
    for alpha in (0.3, 1.7, 5.0):
        assert _scaling_error(probe, z, alpha) < 1e-12


@pytest.mark.parametrize("name", ("gibench_cnn", "gibench_mlp"))
def test_biased_twin_is_not_homogeneous(name: str) -> None:
    """The regular net (the same code with biases) fails the scaling identity, so the X test above is not vacuous."""
    model = _randomized(create_backbone(name, num_classes=5, in_chans=3))
    z = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert _scaling_error(model, z, 2.0) > 1e-3


def test_x_resnet18_layers_parameters_and_fixup_init() -> None:
    model = create_backbone("cifar_resnet18", num_classes=10, in_chans=3, bias=False)
    assert isinstance(model, CifarXResNet18)
    blocks = [m for m in model.modules() if isinstance(m, XBasicBlock)]
    assert len(blocks) == 8 and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    expected = 3 * 64 * 9 + 512 * 10  # stem, classifier
    c_in = 64
    for width in (64, 128, 256, 512):
        expected += c_in * width * 9 + width * width * 9 + width * width * 9 + width * width * 9
        expected += c_in * width if c_in != width else 0  # 1×1 shortcut
        c_in = width
    assert sum(p.numel() for p in model.parameters()) == expected == 11_164_352
    for block in blocks:  # Fixup: branch ends at zero, first conv N(0, 2/(out·9)) · 8^-1/2
        assert block.conv2.weight.abs().max() == 0
        out = block.conv1.weight.shape[0]
        std = block.conv1.weight.std().item()
        assert std == pytest.approx((2 / (out * 9)) ** 0.5 / 8 ** 0.5, rel=0.05)
    assert model.fc.weight.abs().max() == 0 and model.fc.bias is None
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.forward_features(torch.rand(1, 3, 28, 28)).shape == (1, 512, 4, 4)


def test_x_vgg11_has_no_batchnorm_and_the_counted_parameters() -> None:
    model = create_backbone("cifar_vgg11_bn", num_classes=10, in_chans=3, bias=False)
    assert isinstance(model, CifarVGG11BN)
    widths = [w for w in VGG11_LAYERS if w != "M"]
    c_in, expected = 3, 512 * 10
    for width in widths:
        expected += c_in * width * 9
        c_in = width
    assert sum(p.numel() for p in model.parameters()) == expected == 9_222_848
    assert [type(m).__name__ for m in model.features[:3]] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def test_homogeneity_holds_around_the_mean_colour_in_pixel_space() -> None:
    """The whole model Normalize → X backbone scales about the baseline: f(b + α(x − b)) = α·f(x) (the decision in
    gibench.api.saliency: the zero baseline is zero in normalized space, the dataset's mean colour in pixels)."""
    bundle = gibench.testing.tiny_bundle()
    model = build_model("gibench_mlp", {"bias": False, "hidden": 8}, bundle).double().eval()
    x = bundle.test.x[:4].double()
    base = attribution_baseline(model, x)
    torch.testing.assert_close(base.flatten(), torch.tensor(bundle.mean, dtype=torch.float64))
    with torch.no_grad():
        for alpha in (0.25, 3.0):
            torch.testing.assert_close(model(base + alpha * (x - base)), alpha * model(x), rtol=1e-10, atol=1e-12)
        assert (model(torch.zeros_like(x)) - 0).abs().max() > 1e-6  # black is not the baseline


@pytest.mark.parametrize("name", CONV_NETS + ("gibench_mlp",))
def test_softplus_x_backbone_is_refused_naming_the_layer(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_backbone(name, num_classes=10, in_chans=1, bias=False, act="softplus")
    message = str(info.value)
    assert f"backbone {name!r}" in message and "Softplus10" in message and "not positively homogeneous" in message
    assert "act: relu" in message


def test_check_names_batchnorm_bias_and_reports_functional_constants() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with pytest.raises(ConfigError, match=r"layer 1: BatchNorm2d, whose shift.*layer 3: Conv2d with a bias"):
        check_homogeneous(net, (1, 16, 16), "toy")

    class Shifted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) + 1.0

    with pytest.raises(ConfigError, match="no single layer fails the check"):
        check_homogeneous(Shifted(), (1, 2, 2), "shifted")
    check_homogeneous(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2)), (1, 8, 8), "ok")


def test_leaf_check_on_recorded_inputs() -> None:
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Softplus(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[2].bias.fill_(1.0)
    layers = dict(non_homogeneous_layers(net, torch.randn(4, 3, dtype=torch.float64)))
    assert set(layers) == {"1", "2"} and "Softplus" in layers["1"] and "bias" in layers["2"]


def test_check_leaves_the_global_random_state_and_the_model_alone() -> None:
    model = create_backbone("gibench_cnn", num_classes=3, in_chans=1, bias=False, width=4, hidden=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    check_homogeneous(model, (1, 16, 16), "gibench_cnn")
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32


def test_bias_option_is_validated_and_unknown_to_timm_models() -> None:
    with pytest.raises(ConfigError, match="`bias` must be true or false"):
        create_backbone("gibench_cnn", num_classes=10, in_chans=1, bias="no")
    with pytest.raises(ConfigError, match="does not accept the option 'bias'"):
        create_backbone("resnet18", num_classes=10, in_chans=3, bias=False)


@pytest.mark.slow
def test_x_gibench_cnn_learns_mnist_subset(one_thread: None) -> None:
    """Half an epoch of the bundled digits (the X-DNN trains; its accuracy cost is measured by the standard suite)."""
    bundle = gibench.load_dataset("mnist_subset")
    model = trained_model(bundle, "gibench_cnn", {"bias": False}, max_images=2000)
    with torch.no_grad():
        accuracy = (model(bundle.test.x).argmax(1) == bundle.test.y).float().mean().item()
    assert accuracy > 0.8


# ----------------------------------------------------------------------------------------------------------------------
# Suites: extra_grids, and the X-DNN × score-matching conflict


def _suite(**changes):
    from gibench.suites.suite import parse_suite

    raw = {"name": "t", "datasets": ["mnist_subset"], "backbones": [{"gibench_cnn": {"act": "softplus"}}],
           "regularizers": ["erm", "score_matching"], "evaluators": ["accuracy", "blockmnist"], "seeds": [0, 1]}
    return parse_suite({**raw, **changes}, source="t.yaml")


def test_x_backbone_with_score_matching_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        _suite(backbones=[{"gibench_cnn": {"act": "softplus"}}, {"gibench_cnn": {"bias": False}}])
    message = str(info.value)
    assert message.startswith("t.yaml: backbone gibench_cnn(bias=False) is an X-DNN")
    assert "score_matching" in message and "softplus" in message and "extra_grids" in message
    with pytest.raises(ConfigError, match=r"t.yaml: extra_grids\[0\]: backbone gibench_cnn\(bias=False\)"):
        _suite(extra_grids=[{"backbones": [{"gibench_cnn": {"bias": False}}]}])  # inherits score_matching
    _suite(regularizers=["erm", "gradient_norm", "denoising_score_matching"],  # none needs a smooth activation
           backbones=[{"gibench_cnn": {"bias": False}}])


def test_extra_grids_expand_after_the_main_grid_with_their_own_lists() -> None:
    from gibench.suites.jobs import expand

    suite = _suite(extra_grids=[{
        "backbones": [{"gibench_cnn": {"act": "relu"}}, {"gibench_cnn": {"act": "relu", "bias": False}}],
        "regularizers": ["erm"],
        "add_evaluators": [{"blockmnist": {"saliency": "x_gradient"}}],
    }])
    jobs = expand(suite)
    assert [j.label for j in jobs] == [
        "mnist_subset / gibench_cnn(act=softplus) / erm / seed 0",
        "mnist_subset / gibench_cnn(act=softplus) / erm / seed 1",
        "mnist_subset / gibench_cnn(act=softplus) / score_matching / seed 0",
        "mnist_subset / gibench_cnn(act=softplus) / score_matching / seed 1",
        "mnist_subset / gibench_cnn(act=relu) / erm / seed 0", "mnist_subset / gibench_cnn(act=relu) / erm / seed 1",
        "mnist_subset / gibench_cnn(act=relu, bias=False) / erm / seed 0",
        "mnist_subset / gibench_cnn(act=relu, bias=False) / erm / seed 1",
    ]
    main_evaluators = ["accuracy", "blockmnist"]
    assert all([e.label for e in j.evaluators] == main_evaluators for j in jobs[:4])
    assert all([e.label for e in j.evaluators] == main_evaluators + ["blockmnist(saliency=x_gradient)"]
               for j in jobs[4:])
    assert [b.label for b in suite.backbones] == ["gibench_cnn(act=softplus)", "gibench_cnn(act=relu)",
                                                  "gibench_cnn(act=relu, bias=False)"]
    assert [e.label for e in suite.evaluators] == main_evaluators + ["blockmnist(saliency=x_gradient)"]
    assert len(suite.all_grids()) == 2 and len({j.hash for j in jobs}) == len(jobs)
    plain = _suite()
    assert plain.grids == () and len(plain.all_grids()) == 1  # no extra_grids: one grid, as before
    assert [j.hash for j in expand(plain)] == [j.hash for j in jobs[:4]]  # the main grid's jobs keep their hashes


def test_a_job_in_two_grids_is_one_job_scored_by_both() -> None:
    from gibench.suites.jobs import expand

    suite = _suite(regularizers=["erm"], seeds=[0],
                   extra_grids=[{"evaluators": [{"blockmnist": {"saliency": "x_gradient"}}, "accuracy"]}])
    (job,) = expand(suite)
    assert [e.label for e in job.evaluators] == ["accuracy", "blockmnist", "blockmnist(saliency=x_gradient)"]


def test_extra_grids_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"extra_grids\[0\]: unknown key 'backbone'.*Did you mean 'backbones'"):
        _suite(extra_grids=[{"backbone": ["gibench_cnn"]}])
    with pytest.raises(ConfigError, match="must be a list of mappings"):
        _suite(extra_grids={"backbones": ["gibench_cnn"]})
    with pytest.raises(ConfigError, match="an empty grid repeats the main grid"):
        _suite(extra_grids=[{}])
    with pytest.raises(ConfigError, match=r"t.yaml: extra_grids\[0\]: evaluators\[0\]: unknown evaluator"):
        _suite(extra_grids=[{"evaluators": ["acuracy"]}])


def test_evaluator_options_change_one_option_of_a_grid_as_if_the_entry_had_been_written_with_it() -> None:
    from gibench.suites.jobs import expand

    base = {"regularizers": ["erm"], "seeds": [0],
            "evaluators": ["accuracy", {"gan_test": {"num_samples": 100, "steps": 100}}, "blockmnist"]}
    judge = {"judge_backbone": "gibench_cnn", "judge_backbone_options": {"width": 16}}
    mlp = {"backbones": ["gibench_mlp"]}
    merged = _suite(**base, extra_grids=[{**mlp, "evaluator_options": {"gan_test": judge}}])
    written = _suite(**base, extra_grids=[{**mlp, "evaluators": [
        "accuracy", {"gan_test": {"num_samples": 100, "steps": 100, **judge}}, "blockmnist"]}])
    cnn_job, mlp_job = expand(merged)
    assert [(j.hash, [(e.label, e.config_json) for e in j.evaluators]) for j in expand(merged)] == \
        [(j.hash, [(e.label, e.config_json) for e in j.evaluators]) for j in expand(written)]
    assert [e.label for e in mlp_job.evaluators] == [
        "accuracy", "gan_test(num_samples=100, steps=100, judge_backbone=gibench_cnn, "
        "judge_backbone_options={'width': 16})", "blockmnist"]
    assert [e.label for e in cnn_job.evaluators] == ["accuracy", "gan_test(num_samples=100, steps=100)", "blockmnist"]


def test_evaluator_options_are_validated() -> None:
    def grid(options):
        return _suite(extra_grids=[{"backbones": ["gibench_mlp"], "evaluator_options": options}])

    with pytest.raises(ConfigError, match=r"t.yaml: extra_grids\[0\].evaluator_options: 'gan_test' is not an "
                                          r"evaluator of this grid\. Its evaluators: accuracy, blockmnist"):
        grid({"gan_test": {"judge_backbone": "gibench_cnn"}})
    with pytest.raises(ConfigError, match=r"evaluator_options: .*Did you mean 'blockmnist'"):
        grid({"blockmnst": {"saliency": "x_gradient"}})
    with pytest.raises(ConfigError, match=r"evaluator_options.blockmnist.*saliancy"):
        grid({"blockmnist": {"saliancy": "x_gradient"}})
    with pytest.raises(ConfigError, match="expected a mapping of evaluator names to their options"):
        grid(["blockmnist"])
    with pytest.raises(ConfigError, match="one value per option here; a grid of options belongs in"):
        grid({"blockmnist": {"saliency": ["x_gradient", "gradient"]}})


def test_shipped_suites_have_the_x_variants_side_by_side() -> None:
    from gibench.suites.jobs import expand
    from gibench.suites.suite import load_suite

    for name, backbone, twin in (("standard", "gibench_cnn(act=relu, bias=False)", "gibench_cnn(act=relu)"),
                                 ("full", "cifar_resnet18(act=relu, bias=False)", "cifar_resnet18(act=relu)")):
        jobs = expand(load_suite(name))
        x_jobs = [j for j in jobs if j.backbone.label == backbone]
        twins = [j for j in jobs if j.backbone.label == twin]
        assert x_jobs and {(j.dataset.label, j.regularizer.label, j.seed) for j in x_jobs} == \
            {(j.dataset.label, j.regularizer.label, j.seed) for j in twins}
        assert {j.train for j in x_jobs} <= {j.train for j in twins} | {j.train for j in jobs}
        assert "erm" in {j.regularizer.name for j in x_jobs}
        labels = [e.label for e in x_jobs[0].evaluators]
        assert any(label.startswith("pixel_perturbation(") and "saliency=x_gradient" in label for label in labels)
        assert any(e.name == "pixel_perturbation" and "saliency" not in e.params for e in x_jobs[0].evaluators)
        assert not any(registry_needs_smooth(j.regularizer.name) for j in x_jobs)


def registry_needs_smooth(name: str) -> bool:
    from gibench.api import registry

    return registry.regularizers.get(name).needs_smooth_activation


@pytest.mark.slow
def test_a_suite_with_an_x_grid_runs_and_reports_both_variants(tmp_path) -> None:
    from gibench.results.tables import collect_results
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    suite = load_suite(write_suite(
        tmp_path, regularizers=["erm"], evaluators=["accuracy", {"pixel_perturbation": {"max_images": 50}}],
        extra_grids=[{"backbones": [{"gibench_linear": {"bias": False}}],
                      "add_evaluators": [{"pixel_perturbation": {"max_images": 50, "saliency": "x_gradient"}}]}]))
    runs = tmp_path / "runs"
    run_suite(suite, runs, RunOptions(device="cpu"))
    frame = collect_results(runs)
    rows = frame[frame.metric == "accuracy"]
    assert sorted(map(str, rows.backbone_params)) == ['{"bias": false}', "{}"]  # the X variant beside its twin
    perturbation = frame[(frame.evaluator == "pixel_perturbation") & frame.headline]
    pairs = sorted(zip(map(str, perturbation.backbone_params), map(str, perturbation.evaluator_params)))
    assert pairs == [('{"bias": false}', '{"max_images": 50, "saliency": "x_gradient"}'),
                     ('{"bias": false}', '{"max_images": 50}'), ("{}", '{"max_images": 50}')]


def test_preflight_checks_only_the_pairs_and_evaluations_a_grid_has(tmp_path) -> None:
    from gibench.running.preflight import preflight
    from gibench.running.runner import RunOptions
    from gibench.suites.jobs import expand
    from gibench.suites.suite import parse_suite

    suite = parse_suite({
        "name": "t", "datasets": ["gaussian_mixture"], "backbones": ["gibench_linear"], "regularizers": ["erm"],
        "evaluators": ["accuracy"], "seeds": [0],
        "extra_grids": [{"backbones": ["gibench_mlp"], "add_evaluators": ["blockmnist"]}]})
    jobs = expand(suite)
    report = preflight(suite, jobs, tmp_path / "runs", RunOptions(device="cpu"), writes=False)
    warnings = [f for f in report.findings if f.level == "warning" and "blockmnist" in f.message]
    mlp = [j.hash for j in jobs if j.backbone.name == "gibench_mlp"]
    # blockmnist scores only the MLP's job, and gaussian_mixture lacks the signal mask: one warning about that job
    assert len(jobs) == 2 and [f.jobs for f in warnings] == [tuple(mlp)] and "on its 1 job(s)" in warnings[0].message
