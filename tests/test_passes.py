"""Work in device-independent units: each regularizer's declared passes per step equal the passes a step really runs
(counted with hooks, gibench.testing.passes), and `gibench run --estimate` adds them up per row, per evaluator, per
auxiliary model and in total, prices them at a stated throughput without calibrating, and prints them where the
device is absent."""

from __future__ import annotations

import math
import re
import tempfile
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gibench.api import Regularizer, TrainingLoss, registry
from gibench.api.cost import ModelPass, Passes, PluginWork, TrainStep
from gibench.api.dataset import DataSizes
from gibench.api.saliency import saliency_for
from gibench.cli import main
from gibench.core.errors import ConfigError
from gibench.running.estimate import data_sizes, estimate_suite, evaluation_cost, plan, unit_passes
from gibench.suites.jobs import planned_jobs
from gibench.suites.suite import PluginSpec, load_suite
from gibench.testing import ConformanceError, check_regularizer, make_eval_context, tiny_bundle, tiny_model
from gibench.testing.passes import count_passes
from gibench.testing.regularizer_checks import default_annotations
from tests.conftest import write_suite

N_TRAIN, N_TEST, BATCH = 4000, 1000, 128  # mnist_subset, the tiny suite's batch
IMAGES = math.ceil(N_TRAIN / BATCH) * BATCH  # a training of one epoch counts its last batch as a full one


def _counted(name: str, params: dict) -> tuple[Passes, Passes]:
    """(declared, counted) passes per image of one training step of ``name`` on the tiny model, the trainer's
    backward included."""
    cls = registry.regularizers.get(name)
    regularizer = registry.regularizers.create(name, **params)
    x = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    extra = {"annotations": default_annotations(frozenset(cls.requires), x)} if cls.requires else {}
    model = tiny_model().train()
    torch.manual_seed(0)
    with count_passes(model) as count:
        regularizer.training_loss(model, x, y, **extra).total.backward()
    return regularizer.passes_per_step(), count.per_image(len(y))


@pytest.mark.parametrize(("name", "params", "expected"), [
    ("erm", {}, Passes(1, 1)),
    ("gradient_norm", {}, Passes(1, 3)),  # forward; input gradient, training backward through forward and gradient
    ("pgd", {"steps": 3}, Passes(4, 4)),  # 3 attack steps (forward + input gradient), then the training step
    ("trades", {}, Passes(8, 7)),  # no-grad reference forward, 5 attack steps, clean and adversarial forwards
])
def test_the_declared_passes_are_the_counted_passes(name, params, expected):
    declared, counted = _counted(name, params)
    assert declared == counted == expected


OTHER_SETTINGS = [
    ("gaussian_noise", {"num_samples": 3}), ("fooled", {}), ("rrr", {}), ("attribution_prior", {}),
    ("attribution_prior", {"attribution": "expected_gradients", "references": 3}),
    ("noise_consistency", {"num_samples": 2}), ("anti_score_matching", {"num_samples": 3}),
    ("score_matching", {"num_samples": 2}), ("score_matching_antithetic", {"num_samples": 2}),
    ("denoising_score_matching", {"num_samples": 2}), ("score_matching_hutchinson", {"num_samples": 2}),
    ("score_matching_hutchinson", {"weight": 0.0}), ("sliced_score_matching", {"num_samples": 3}),
    ("sliced_score_matching", {"weight": 0.0}), ("pgd", {"epsilon": 0.0}), ("pgd", {"attack_mode": "train"}),
    ("trades", {"beta": 0.0}), ("trades", {"epsilon": 0.0}), ("trades", {"steps": 2, "norm": "l2"}),
]


@pytest.mark.parametrize(("name", "params"), OTHER_SETTINGS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()) or "defaults")
def test_every_setting_that_changes_the_passes_is_declared(name, params):
    declared, counted = _counted(name, params)
    assert declared == counted


def test_the_counter_counts_images_and_each_graph_a_gradient_passes():
    model, x, y = tiny_model(), torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    with count_passes(model) as count:
        with torch.no_grad():
            model(x)  # a forward without gradient: no backward can follow
        model(torch.cat([x, x]))  # 8 images: 2 forwards per image of the batch of 4, never back-propagated
    assert count.per_image(4) == Passes(3, 0)
    with count_passes(model) as count:
        leaf = x.clone().requires_grad_(True)
        logits = model(leaf)
        (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), leaf, create_graph=True)
        (F.cross_entropy(logits, y) + grad.pow(2).sum()).backward()  # through the forward's and the gradient's graph
    assert count.per_image(4) == Passes(1, 3)
    model(x).sum().backward()  # after the context: not counted, the hook is gone
    assert count.per_image(4) == Passes(1, 3)


class UndeclaredNoisyCopy(Regularizer):
    """Cross-entropy on the batch and on a noisy copy, declaring plain cross-entropy's passes (the default)."""

    zero_strength = None

    def training_loss(self, model, x, y):
        ce = F.cross_entropy(model(x), y) + F.cross_entropy(model(x + 0.1), y)
        return TrainingLoss(ce, {"cross_entropy": ce.detach()})


def test_check_regularizer_refuses_a_wrong_declaration():
    with pytest.raises(ConformanceError) as caught:
        check_regularizer(UndeclaredNoisyCopy)
    (line,) = caught.value.failures
    assert line.startswith("passes_per_step matches the passes a step runs: passes_per_step() does not match")
    assert "at the defaults it declares 1 forward(s) and 1 backward(s) per image, a step ran 2 and 2" in line

    class Declared(UndeclaredNoisyCopy):
        def passes_per_step(self):
            return Passes(forward=2, backward=2)

    check_regularizer(Declared)


@pytest.mark.parametrize(("name", "params"), [("pixel_perturbation", {"max_images": 5, "fractions": [0.2, 0.5]}),
                                              ("sensitivity", {"max_images": 3, "num_samples": 2})])
def test_a_forward_pass_is_one_forward_and_a_saliency_pass_one_forward_and_one_backward(name, params):
    bundle = tiny_bundle(image_size=(8, 8), train_size=12, test_size=12)
    evaluator = registry.evaluators.create(name, **params)
    model = tiny_model(bundle).eval()
    with tempfile.TemporaryDirectory() as folder, count_passes(model) as count:
        evaluator.evaluate(make_eval_context(model, bundle, folder, batch_size=4,
                                             saliency=saliency_for(evaluator.config)))
    data = DataSizes(tuple(bundle.test.x.shape[1:]), bundle.num_classes, len(bundle.train), len(bundle.test))
    job = SimpleNamespace(backbone=PluginSpec.of("gibench_cnn", {}, {}))
    cost = evaluation_cost(PluginSpec.of(name, params, {}), job, data, eval_batch=4)
    assert {type(unit) for unit in cost.per_job} == {ModelPass}
    assert count.per_image(1) == sum((n * unit_passes(unit) for unit, n in cost.per_job.items()), Passes())


# ----------------------------------------------------------------------------------------------------------------------
# The estimate counts passes


REGULARIZERS = ["erm", {"gradient_norm": {"weight": 1.0e-3}}, {"pgd": {"steps": 3}}]
EVALUATORS = ["accuracy", {"pixel_perturbation": {"max_images": 200}}]
#: per image of a training step: erm 1 + 1, gradient_norm 1 + 3, pgd(steps=3) 4 + 4
TRAIN = {"forward": (1 + 1 + 4) * IMAGES, "backward": (1 + 3 + 4) * IMAGES}
#: per job: accuracy 1,000 forwards; pixel_perturbation 200 saliency passes and 200 × (1 + 2 × 25) forwards
EVAL = {"forward": N_TEST + 200 + 200 * (1 + 2 * 25), "backward": 200}


def _tiny(tmp_path, **changes):
    return load_suite(write_suite(tmp_path, **{"regularizers": REGULARIZERS, "evaluators": EVALUATORS, "seeds": [0, 1],
                                               **changes}))


def test_the_total_is_the_sum_of_the_jobs_and_the_evaluations(tmp_path):
    counted = plan(_tiny(tmp_path), tmp_path / "runs")
    forward = 2 * TRAIN["forward"] + 6 * EVAL["forward"]  # 2 seeds × 3 regularizers
    backward = 2 * TRAIN["backward"] + 6 * EVAL["backward"]
    assert counted.passes == Passes(forward, backward)
    assert counted.passes.forward_equivalents == forward + 2 * backward == 251_024
    assert counted.train_passes == Passes(2 * TRAIN["forward"], 2 * TRAIN["backward"])
    by_row = {r.regularizer.split("(")[0]: r.train_passes for r in counted.rows}
    assert by_row == {"erm": Passes(2 * IMAGES, 2 * IMAGES), "gradient_norm": Passes(2 * IMAGES, 6 * IMAGES),
                      "pgd": Passes(8 * IMAGES, 8 * IMAGES)}
    assert all(r.eval_passes == Passes(2 * EVAL["forward"], 2 * EVAL["backward"]) for r in counted.rows)
    per_evaluator = {e.evaluator: (e.jobs_left, e.passes) for e in counted.evaluators}
    assert per_evaluator == {"accuracy": (6, Passes(6 * N_TEST)),
                             "pixel_perturbation(max_images=200)": (6, Passes(6 * 10_400, 6 * 200))}


def _rule(unit) -> Passes:
    """The pass rule written out here, apart from the estimate's."""
    if isinstance(unit, TrainStep):
        per_image = {"erm": Passes(1, 1), "gradient_norm": Passes(1, 3), "pgd": Passes(4, 4)}[unit.regularizer.name]
        return per_image * unit.train.batch_size
    if isinstance(unit, PluginWork):
        return unit.passes * (unit.batch_size if unit.per == "step" else 1)
    return Passes(1) if unit.kind == "forward" else Passes(1, 1)


def test_shared_auxiliary_models_count_once_and_the_parts_add_up(tmp_path):
    evaluators = [*EVALUATORS, {"gan_test": {"num_samples": 20, "steps": 3}},
                  {"diffroar": {"levels": [0.5], "retrain_seeds": [0], "epochs": 1, "max_train_images": 300}}]
    suite = _tiny(tmp_path, evaluators=evaluators)
    counted = plan(suite, tmp_path / "runs")
    data = data_sizes(suite.datasets[0])
    jobs, shared = Passes(), {}
    for job in planned_jobs(suite):
        jobs = jobs + math.ceil(data.n_train / BATCH) * _rule(TrainStep(job.backbone, job.regularizer, job.train,
                                                                         data.shape, data.num_classes))
        for spec in job.evaluators:
            cost = evaluation_cost(spec, job, data, 256)
            jobs = jobs + sum((n * _rule(u) for u, n in cost.per_job.items()), Passes())
            shared.update({key: sum((n * _rule(u) for u, n in aux.items()), Passes())
                           for key, (_, aux) in cost.shared.items()})
    (judge,) = shared.values()  # one judge for the 6 jobs of the one dataset
    assert [r.passes for r in counted.auxiliary] == [judge]
    assert counted.passes == jobs + judge
    assert sum((r.passes for r in counted.rows), Passes()) == jobs
    assert sum((e.passes for e in counted.evaluators), Passes()) + counted.train_passes == jobs
    retrain = next(e for e in counted.evaluators if e.evaluator.startswith("diffroar"))
    steps = 2 * math.ceil(300 / BATCH)  # per job: 2 sides × 1 level × 1 seed of erm steps, batch 128
    assert sum(n for u, n in retrain.work.items() if isinstance(u, TrainStep)) == 6 * steps


def test_a_stated_throughput_prices_the_passes_without_calibrating(tmp_path):
    cache = tmp_path / "cache.json"
    est = estimate_suite(_tiny(tmp_path), tmp_path / "runs", device="cuda:7", cache_path=cache, throughput=1234.5)
    assert est.calibration is None and not cache.exists()  # nothing timed, and no device needed
    assert est.seconds / 3600 == 251_024 / 1234.5 / 3600
    assert est.train_seconds == (2 * TRAIN["forward"] + 4 * TRAIN["backward"]) / 1234.5
    assert sum(r.seconds for r in est.rows) == pytest.approx(est.seconds, rel=1e-12)
    assert [e.seconds for e in est.evaluators] == [e.passes.forward_equivalents / 1234.5 for e in est.evaluators]
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match="--throughput must be a positive number of forward-equivalent passes"):
            estimate_suite(_tiny(tmp_path), tmp_path / "runs", throughput=bad)


def _run(capsys, *argv):
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, " ".join(out.split()), " ".join(err.split())


def test_the_cli_prints_passes_and_hours_at_a_stated_throughput(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suite, runs = write_suite(tmp_path, regularizers=REGULARIZERS, evaluators=EVALUATORS, seeds=[0, 1]), tmp_path / "r"
    code, out, _ = _run(capsys, "--suite", str(suite), "--runs-dir", str(runs), "--estimate", "--throughput", "10")
    assert code == 0 and "suite tiny: estimated device-hours at 10 forward-equivalent passes/s" in out
    assert (f"6 job(s), 6 not yet complete in {runs}: 1.176e+05 forward and 6.674e+04 backward passes, "
            f"2.51e+05 forward-equivalent; about {251_024 / 10 / 3600:.3g} device-hours") in out
    assert re.search(r"pgd\(steps=3\) │ 2/2 │ 9\.83e\+04 │", out) and "pixel_perturbation(max_images=200) │ 6" in out
    assert not runs.exists() and not (tmp_path / "cache").exists()  # nothing written, nothing calibrated
    code, _, err = _run(capsys, "--suite", str(suite), "--runs-dir", str(runs), "--estimate", "--throughput", "0")
    assert code == 2 and "error: --throughput must be a positive number" in err
    code, _, err = _run(capsys, "--suite", str(suite), "--runs-dir", str(runs), "--throughput", "10")
    assert code == 2 and "error: --throughput prices the passes of --estimate" in err and not runs.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_cli_prints_the_passes_where_the_device_is_absent(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suite = write_suite(tmp_path, regularizers=REGULARIZERS, evaluators=EVALUATORS, seeds=[0, 1])
    code, out, _ = _run(capsys, "--suite", str(suite), "--runs-dir", str(tmp_path / "r"), "--estimate", "--device",
                        "cuda")
    assert code == 0 and "suite tiny: work in model passes" in out and "2.51e+05 forward-equivalent" in out
    assert ("Device-hours need the device (--device cuda was requested but no CUDA device is available; use "
            "--device cpu) or a stated throughput: --throughput PASSES_PER_SECOND.") in out
    assert not (tmp_path / "cache").exists()
