"""``gan_test``: the sampler follows the reference update, the judge scores real data at its clean accuracy and noise
at chance, the diversity separates collapsed from data-like samples, the judge is trained once per runs directory,
and a trained model scores clearly above an untrained one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import gibench
from gibench.api.plugin import Evaluator
from gibench.core.errors import ConfigError, GibenchError
from gibench.evaluators.gan_test import (
    JUDGE_KIND,
    GANTest,
    ascend,
    balanced_targets,
    draw_samples,
    get_judge,
    initial_images,
    judge_accuracy,
    judge_outputs,
    spread_ratio,
)
from gibench.store.auxiliary import AuxiliaryModels
from gibench.suites.jobs import expand
from gibench.suites.suite import PluginSpec, TrainConfig, parse_suite
from gibench.testing import make_eval_context
from gibench.training.models import build_model
from gibench.training.train import fit

#: a quick judge (2 epochs of the default MLP, 0.93+ on mnist_subset) and a floor it clears
FAST_JUDGE = {"judge_epochs": 2, "judge_min_accuracy": 0.85}
SMALL_CNN = {"width": 8, "hidden": 64}


@pytest.fixture(scope="module")
def mnist():
    return gibench.load_dataset("mnist_subset")


@pytest.fixture(scope="module")
def aux_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store") / "aux"


def small_cnn(bundle, seed=0):
    torch.manual_seed(seed)
    return build_model("gibench_cnn", {**SMALL_CNN, "act": "softplus"}, bundle).eval()


def context(model, bundle, tmp_path: Path, aux_root: Path | None = None, batch_size=64, seed=0, job=None):
    aux = AuxiliaryModels(aux_root) if aux_root is not None else None
    return make_eval_context(model, bundle, tmp_path, batch_size=batch_size, seed=seed, aux=aux, job=job)


def config(**changes):
    return GANTest.Config(**{**FAST_JUDGE, **changes})


# -- declarations (mirrors tests/test_evaluators.py::test_declarations) ------------------------------------------------


def test_declarations():
    assert gibench.create_evaluator("gan_test").__class__ is GANTest
    assert issubclass(GANTest, Evaluator) and isinstance(GANTest.version, str) and GANTest.version
    assert sum(m.headline for m in GANTest.metrics) == 1 and GANTest.headline().name == "gan_test_accuracy"
    assert len({m.name for m in GANTest.metrics}) == len(GANTest.metrics)
    assert GANTest.requires == frozenset()
    assert GANTest.__doc__ and len(__import__(GANTest.__module__, fromlist=["_"]).__doc__) > 500
    defaults = GANTest.Config()  # the reference's settings
    assert (defaults.steps, defaults.step_size, defaults.pull, defaults.init_mean, defaults.init_std,
            defaults.langevin_temperature) == (500, 0.1, 1e-2, 0.5, 0.2, 0.0)


@pytest.mark.parametrize("params, message", [
    ({"num_samples": 0}, "num_samples"), ({"steps": -1}, "steps"), ({"step_size": 0}, "step_size"),
    ({"langevin_temperature": -1}, "langevin_temperature"), ({"judge_min_accuracy": 1.5}, "judge_min_accuracy"),
    ({"diversity_space": "inception"}, "diversity_space"), ({"judge_epochs": 0}, "judge_epochs"),
    ({"init_mean": 2.0}, "init_mean"), ({"judge_backbone_options": "wide"}, "judge_backbone_options"),
])
def test_bad_configs_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        gibench.create_evaluator("gan_test", **params)


# -- the sampler -------------------------------------------------------------------------------------------------------


def test_balanced_targets_in_a_fixed_order():
    targets = balanced_targets(23, 10)
    assert targets[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.bincount(targets, minlength=10).tolist() == [3, 3, 3] + [2] * 7


def test_start_images_are_the_clamped_gaussian_of_the_seed():
    cfg = GANTest.Config()
    start = initial_images(4000, (1, 4, 4), cfg, seed=3)
    expected = (0.5 + 0.2 * torch.randn((4000, 1, 4, 4), generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert torch.equal(start, expected)
    assert float(start.mean()) == pytest.approx(0.5, abs=0.01) and start.min() >= 0 and start.max() <= 1
    assert float((start == 0).double().mean()) == pytest.approx(0.0062, abs=0.002)  # P(N(.5, .2²) < 0) = 0.62%


def test_ascent_follows_the_update_rule_of_the_reference(small_bundle):
    """Against a re-implementation with the analytic gradient of a linear model (∇x f_y = W_y)."""
    model = build_model("gibench_linear", {}, small_bundle).eval()
    with torch.no_grad():
        model.backbone.fc.weight.mul_(40.0)  # large enough that some pixels reach the clamp
    cfg = GANTest.Config(steps=4, step_size=0.1, pull=0.05)
    x0 = initial_images(6, (1, 28, 28), cfg, seed=0)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    weight = model.backbone.fc.weight.detach() / model.normalize.std.flatten()  # chain rule through Normalize
    expected = x0.clone()
    for _ in range(cfg.steps):
        expected = (expected + 0.1 * (weight[y].view(6, 1, 28, 28) - 0.05 * (expected - 0.5))).clamp(0, 1)
    got = ascend(model, x0, y, cfg)
    assert torch.allclose(got, expected, atol=1e-6)
    assert 0 < float((got == 1).double().mean()) < 1 and not torch.equal(got, x0)  # the clamp was exercised


def test_langevin_noise_has_the_stated_variance(small_bundle):
    """With a flat logit and no pull, one step adds ξ ~ N(0, 2·η·T)."""
    model = build_model("gibench_linear", {}, small_bundle).eval()
    torch.nn.init.zeros_(model.backbone.fc.weight)
    cfg = GANTest.Config(steps=1, step_size=0.1, pull=0.0, langevin_temperature=0.02)
    x0 = torch.full((200, 1, 28, 28), 0.5)
    step = ascend(model, x0, torch.zeros(200, dtype=torch.long), cfg, torch.Generator().manual_seed(0)) - x0
    assert float(step.std()) == pytest.approx((2 * 0.1 * 0.02) ** 0.5, rel=0.01)
    assert float(step.mean()) == pytest.approx(0.0, abs=2e-3)


def test_samples_stay_in_the_unit_box_and_are_deterministic(mnist):
    model = small_cnn(mnist)
    targets = balanced_targets(30, 10)
    cfg = GANTest.Config(steps=5, step_size=1.0)  # large steps: pixels hit both bounds
    a = draw_samples(model, targets, (1, 28, 28), cfg, seed=1, batch_size=30, device=torch.device("cpu"))
    b = draw_samples(model, targets, (1, 28, 28), cfg, seed=1, batch_size=7, device=torch.device("cpu"))
    c = draw_samples(model, targets, (1, 28, 28), cfg, seed=2, batch_size=30, device=torch.device("cpu"))
    assert a.shape == (30, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)  # no noise: independent of the batch size
    assert not torch.allclose(a, c)
    noisy = GANTest.Config(steps=3, langevin_temperature=1e-3)
    first, again = (draw_samples(model, targets, (1, 28, 28), noisy, 4, 30, torch.device("cpu")) for _ in range(2))
    assert torch.equal(first, again)


def test_sampling_leaves_the_model_mode_and_global_rng_alone(mnist):
    model = small_cnn(mnist).train()
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    draw_samples(model, balanced_targets(10, 10), (1, 28, 28), GANTest.Config(steps=2), 0, 10, torch.device("cpu"))
    assert torch.equal(torch.rand(3), before) and model.training


# -- the judge ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge(mnist, aux_root, tmp_path_factory):
    ctx = context(small_cnn(mnist), mnist, tmp_path_factory.mktemp("art"), aux_root)
    return get_judge(ctx, config())


def test_judge_on_real_test_images_scores_its_clean_accuracy(mnist, judge):
    accuracy = judge_accuracy(judge.model, mnist.test.x, mnist.test.y, 128, torch.device("cpu"))
    assert accuracy == pytest.approx(judge.quality["test_accuracy"], abs=1e-12)
    assert accuracy >= 0.85


def test_judge_on_uniform_noise_is_near_chance(mnist, judge):
    noise = torch.rand((1000, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    accuracy = judge_accuracy(judge.model, noise, balanced_targets(1000, 10), 256, torch.device("cpu"))
    assert abs(accuracy - 0.1) < 0.06


def test_a_judge_below_the_floor_fails_naming_the_floor(mnist, aux_root, tmp_path):
    ctx = context(small_cnn(mnist), mnist, tmp_path, aux_root)
    with pytest.raises(GibenchError, match=r"below the floor 0\.999 .*judge_min_accuracy"):
        GANTest(config(judge_min_accuracy=0.999, num_samples=20, steps=1)).evaluate(ctx)


def test_a_judge_built_like_the_benchmarked_model_is_refused(mnist, tmp_path):
    model = build_model("gibench_cnn", SMALL_CNN, mnist).eval()
    ctx = context(model, mnist, tmp_path)
    with pytest.raises(GibenchError, match="same architecture as the benchmarked model") as refused:
        GANTest(config(judge_backbone="gibench_cnn", judge_backbone_options=SMALL_CNN)).evaluate(ctx)
    assert "e.g. {gan_test: {judge_backbone: gibench_mlp}}" in str(refused.value)  # another architecture than its own
    assert ctx.aux.trained == []  # refused before any training


def test_an_mlp_model_is_pointed_to_a_cnn_judge(mnist, tmp_path):
    model = build_model("gibench_mlp", {}, mnist).eval()
    with pytest.raises(GibenchError, match="same architecture") as refused:
        GANTest(config(judge_backbone="gibench_mlp")).evaluate(context(model, mnist, tmp_path))
    assert "e.g. {gan_test: {judge_backbone: gibench_cnn, judge_backbone_options: {width: 16}}}" in str(refused.value)


def _two_jobs():
    suite = parse_suite({
        "name": "t", "datasets": ["mnist_subset"], "backbones": [{"gibench_cnn": SMALL_CNN}],
        "regularizers": ["erm", "gradient_norm"], "evaluators": ["gan_test"], "seeds": [0],
        "train": {"epochs": 1},
    })
    return expand(suite)


def test_the_judge_is_trained_once_per_runs_directory(mnist, tmp_path):
    root = tmp_path / "aux"
    evaluator = GANTest(config(num_samples=20, steps=2))
    first_job, second_job = _two_jobs()
    aux = AuxiliaryModels(root)
    for job in (first_job, first_job, second_job):  # a second evaluation, then a second job on the same dataset
        ctx = context(small_cnn(mnist, seed=job.seed), mnist, tmp_path / "art", job=job)
        ctx.aux = aux
        evaluator.evaluate(ctx)
    assert len(aux.trained) == 1
    folders = list(root.glob(f"{JUDGE_KIND}-*"))
    assert [f.name for f in folders] == [f"{JUDGE_KIND}-{aux.trained[0]}"]
    stored = json.loads((folders[0] / "identity.json").read_text())["identity"]
    assert stored["data"]["dataset"] == first_job.training_spec()["dataset"]
    assert stored["backbone"] == {"name": "gibench_mlp", "options": {}} and stored["seed"] == 12345
    rerun = AuxiliaryModels(root)  # a rerun of the suite: a new process on the same runs directory
    ctx = context(small_cnn(mnist), mnist, tmp_path / "art", job=second_job)
    ctx.aux = rerun
    evaluator.evaluate(ctx)
    assert rerun.trained == [] and len(list(root.glob(f"{JUDGE_KIND}-*"))) == 1


def test_outside_a_suite_the_judge_is_named_by_the_data_content(small_bundle, mnist, aux_root, tmp_path):
    from gibench.evaluators.gan_test import data_identity

    a = data_identity(context(small_cnn(mnist), mnist, tmp_path))
    b = data_identity(context(small_cnn(mnist, seed=1), mnist, tmp_path))
    c = data_identity(context(small_cnn(small_bundle), small_bundle, tmp_path))
    assert a == b and a != c and a["dataset"]["name"] == "mnist_subset"


# -- diversity ---------------------------------------------------------------------------------------------------------


def test_diversity_of_collapsed_samples_is_zero_and_of_real_images_one(mnist, judge, tmp_path):
    cpu = torch.device("cpu")
    real_y = mnist.test.y
    _, real_features = judge_outputs(judge.model, mnist.test.x, 256, cpu)
    assert torch.allclose(spread_ratio(real_features, real_y, real_features, real_y, 10), torch.ones(10, dtype=float))
    targets = balanced_targets(200, 10)
    first_of_class = torch.stack([mnist.train.x[mnist.train.y == k][0] for k in range(10)])
    collapsed = first_of_class[targets]
    evaluator = GANTest(config())
    ctx = context(small_cnn(mnist), mnist, tmp_path)
    result = evaluator._result(ctx, judge.model, collapsed, targets)
    assert result.scalars["diversity"] == pytest.approx(0.0, abs=1e-6)
    assert result.scalars["accuracy_times_diversity"] == pytest.approx(0.0, abs=1e-6)
    assert result.scalars["gan_test_accuracy"] >= 0.7  # real digits: recognisable, but not varied
    real_train = mnist.train.x[:1000]
    result = evaluator._result(ctx, judge.model, real_train, mnist.train.y[:1000])
    assert result.scalars["diversity"] == pytest.approx(1.0, abs=0.15)
    pixels = GANTest(config(diversity_space="pixels"))._result(ctx, judge.model, real_train, mnist.train.y[:1000])
    assert pixels.scalars["diversity"] == pytest.approx(1.0, abs=0.15)


# -- end to end --------------------------------------------------------------------------------------------------------


def test_evaluate_returns_declared_metrics_and_a_row_per_class_grid(mnist, aux_root, tmp_path):
    ctx = context(small_cnn(mnist), mnist, tmp_path, aux_root, batch_size=16)
    torch.manual_seed(0)
    rng = torch.random.get_rng_state()
    result = GANTest(config(num_samples=85, steps=3, grid_samples=8)).evaluate(ctx)  # 8 or 9 samples per class
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global random state is left alone
    assert set(result.scalars) == {m.name for m in GANTest.metrics}
    assert all(isinstance(v, float) for v in result.scalars.values())
    with Image.open(tmp_path / result.artifacts["samples"]) as image:
        assert image.height >= 10 * 56 and 9 * 58 <= image.width < 10 * 58  # ten rows: a real digit, 8 samples
    stored = json.loads((tmp_path / result.artifacts["curves"]).read_text())
    assert set(stored) == set(result.curves)
    for key, curve in result.curves.items():
        assert stored[key]["x"] == list(curve.x) and len(curve.x) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_too_few_samples_for_the_diversity_is_a_clear_error(mnist, aux_root, tmp_path):
    with pytest.raises(GibenchError, match="num_samples >= 20"):
        GANTest(config(num_samples=15)).evaluate(context(small_cnn(mnist), mnist, tmp_path, aux_root))


def test_a_trained_model_scores_clearly_higher_than_an_untrained_one(mnist, aux_root, tmp_path):
    spec = PluginSpec.of("gibench_cnn", {**SMALL_CNN, "act": "softplus"}, {**SMALL_CNN, "act": "softplus"})
    trained = fit(mnist, spec, gibench.create_regularizer("erm"), TrainConfig(epochs=2), seed=0).model
    evaluator = GANTest(config(num_samples=50, steps=100))
    scores = {name: evaluator.evaluate(context(model, mnist, tmp_path / name, aux_root, batch_size=50)).scalars
              for name, model in (("trained", trained), ("untrained", small_cnn(mnist)))}
    assert scores["trained"]["gan_test_accuracy"] >= scores["untrained"]["gan_test_accuracy"] + 0.3
    assert scores["trained"]["model_accuracy_on_samples"] >= 0.95
    assert scores["trained"]["accuracy_times_diversity"] > scores["untrained"]["accuracy_times_diversity"]


def test_the_default_floor_rejects_a_weak_judge(mnist, tmp_path):
    weak = config(judge_backbone="gibench_linear", judge_epochs=1, judge_lr=1e-4, judge_min_accuracy=0.85)
    ctx = context(small_cnn(mnist), mnist, tmp_path)
    with pytest.raises(GibenchError, match=r"test_accuracy = 0\.5\d+, below the floor 0\.85"):
        GANTest(weak).evaluate(ctx)
    assert GANTest.Config().judge_min_accuracy == 0.85


def test_a_suite_run_records_the_judge_and_a_rerun_reuses_it(tmp_path):
    from gibench.running.runner import RunOptions, run_suite
    from gibench.suites.suite import load_suite
    from tests.conftest import write_suite

    gan_test = {"gan_test": {"num_samples": 20, "steps": 3, **FAST_JUDGE}}
    runs = tmp_path / "runs"
    first = write_suite(tmp_path, regularizers=["erm"], evaluators=[gan_test])
    run_suite(load_suite(first), runs, RunOptions(device="cpu"))
    judges = list((runs / "aux").glob(f"{JUDGE_KIND}-*/status.json"))
    assert len(judges) == 1
    second = write_suite(tmp_path, regularizers=[{"gradient_norm": {"weight": 1.0e-3}}], evaluators=[gan_test])
    run_suite(load_suite(second), runs, RunOptions(device="cpu"))  # another job on the same dataset, another run
    assert list((runs / "aux").glob(f"{JUDGE_KIND}-*/status.json")) == judges
    assert json.loads(judges[0].read_text())["state"] == "trained"
    records = [json.loads(p.read_text()) for p in runs.glob("jobs/*/results/gan_test__*.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    for record in records:
        (used,) = record["auxiliary"]
        assert used["kind"] == JUDGE_KIND and used["folder"] == f"aux/{judges[0].parent.name}"
        assert used["quality"]["test_accuracy"] >= 0.85


def test_no_shipped_suite_judges_a_model_with_its_own_architecture():
    """Every grid of every shipped suite names a GAN-test judge built unlike the models it judges (the runtime check
    would fail those evaluations)."""
    from gibench.suites.jobs import planned_jobs
    from gibench.suites.suite import load_suite, shipped_suites

    for name in shipped_suites():
        for job in planned_jobs(load_suite(name)):
            for spec in job.evaluators:
                if spec.name == "gan_test":
                    judge = (spec.config["judge_backbone"], spec.config["judge_backbone_options"] or {})
                    assert judge != (job.backbone.name, dict(job.backbone.config)), (name, job.backbone.label)
