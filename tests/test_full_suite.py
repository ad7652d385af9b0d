"""The shipped `full` suite: the seed papers' setting, and one clear error while its datasets are missing."""

from __future__ import annotations

import math

import pytest
import yaml

from gibench.api import registry
from gibench.cli import main
from gibench.running.preflight import PreflightError
from gibench.running.runner import RunOptions, run_suite
from gibench.suites.jobs import expand, planned_jobs, sweep_jobs, sweep_point, swept_values
from gibench.suites.suite import load_suite, resolve_suite_path

FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(resolve_suite_path("full").read_text())


@pytest.fixture(scope="module")
def suite():
    return load_suite("full")


def _names(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _grid_points(entry) -> int:
    """Grid points of one plugin entry: the product of the lengths of its list-valued options (tuple-typed options
    such as diffroar's levels are one value)."""
    if isinstance(entry, str):
        return 1
    (name, options), = entry.items()
    sequence_options = {"levels", "retrain_seeds", "fractions", "sigmas", "milestones"}
    return math.prod(len(v) for k, v in (options or {}).items() if isinstance(v, list) and k not in sequence_options)


def _extra_jobs(raw) -> int:
    """Jobs of the suite's ``extra_grids`` (a list left out of a grid is the top-level one)."""
    return sum(math.prod(sum(_grid_points(e) for e in grid.get(key, raw[key]))
                         for key in ("datasets", "backbones", "regularizers")) * len(raw["seeds"])
               for grid in raw.get("extra_grids", []))


def test_full_sweeps_every_regularizer_over_settings_that_hold_its_papers_default(raw, suite):
    main = suite.grids[0]
    values = {spec.label: swept_values(suite, spec) for spec in main.regularizers}
    assert {label for label, sweep in values.items() if sweep is None} == {"erm", "fooled"}
    assert values["pgd(norm=l2)"][0] == "epsilon" and {0.25, 0.5, 1.0} <= set(values["pgd(norm=l2)"][1])  # Shah et al.
    assert values["pgd(norm=linf)"][1] == pytest.approx((2 / 255, 4 / 255, 8 / 255, 16 / 255))  # Madry et al.'s 8/255
    trades = next(label for label in values if label.startswith("trades"))
    assert values[trades] == ("beta", (0.3, 1.0, 3.0, 6.0, 10.0))  # the paper's CIFAR-10 β = 6
    for name, paper_default in (("gradient_norm", 1e-3), ("score_matching", 1e-3), ("anti_score_matching", 1e-4),
                                ("gaussian_noise", 0.25), ("noise_consistency", 1.0), ("jem", 1.0)):
        assert paper_default in values[name][1], name
    sweep = sweep_jobs(suite)
    main_points = sum(len(v[1]) for v in values.values() if v is not None) + 1  # every swept value and erm
    in_main = [j for j in sweep if j.backbone in main.backbones and j.dataset in main.datasets]
    assert len(in_main) == 6 * 2 * main_points
    assert sweep_point(main.regularizers[1], "weight", 1e-3) in {j.regularizer for j in in_main}  # gradient_norm
    assert {j.seed for j in sweep} == {0} and all(j.validation is not None for j in sweep)
    assert {j.regularizer.name for j in sweep} >= {"erm", "rrr", "attribution_prior"}  # the extra grids sweep too
    scored = expand(suite)  # before a selection: only what is not swept, with every seed
    assert {j.regularizer.name for j in scored} == {"erm", "fooled"} and suite.seeds == (0, 1, 2)
    assert len(planned_jobs(suite)) > len(sweep)


def _builtins(reg) -> set[str]:
    return {info.name for info in reg.infos() if info.distribution == "gibench"}


def test_every_built_in_regularizer_and_evaluator_is_in_full(raw, suite):
    assert {s.name for s in suite.regularizers} == _builtins(registry.regularizers)  # over all grids
    # validation_accuracy is the selection's instrument: a suite that selects runs it on every job by itself
    assert {s.name for s in suite.evaluators} == _builtins(registry.evaluators) - {"validation_accuracy"}
    pgd = sorted(s.config["norm"] for s in suite.regularizers if s.name == "pgd")
    assert pgd == ["l2", "linf"]  # the radius is swept
    trades = [{k: s.config[k] for k in ("norm", "epsilon", "steps", "step_size")}
              for s in suite.regularizers if s.name == "trades"]
    assert trades == [{"norm": "linf", "epsilon": 0.031, "steps": 10, "step_size": 0.007}]  # CIFAR-10's attack
    decoy = next(g for g in suite.grids if any(d.name == "decoy_mnist" for d in g.datasets))
    assert [r.name for r in decoy.regularizers] == ["erm", "rrr"] and decoy.datasets[0].config["source"] == "mnist"
    gan = next(s for s in suite.evaluators if s.name == "gan_test").config
    assert (gan["num_samples"], gan["steps"]) == (1000, 500)
    diffroar = next(s for s in suite.evaluators if s.name == "diffroar").config
    assert len(diffroar["levels"]) == 7 and diffroar["retrain_seeds"] == [0, 1, 2]


def test_full_trains_with_the_papers_recipe_and_augments_cifar_only(suite):
    jobs = planned_jobs(suite)
    assert {(j.dataset.name, j.backbone.name, j.backbone.config.get("act")) for j in jobs} >= {
        ("cifar10", "cifar_resnet18", "softplus"), ("mnist", "cifar_vgg11_bn", "softplus")}
    for job in jobs:
        t = job.train
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size, t.epochs, t.schedule) == \
            ("sgd", 0.1, 0.9, 5e-4, 128, 200, "multistep")
        assert tuple(t.milestones) == (0.5, 0.75) and t.gamma == 0.1
        assert t.augment == ("crop_flip" if job.dataset.name in ("cifar10", "cifar100") else "none"), job.label
    blockmnist = next(s for s in suite.datasets if s.name == "blockmnist")
    assert blockmnist.config["source"] == "mnist"


def test_the_standard_suite_trains_every_built_in_at_a_setting_that_does_not_collapse_here():
    """Its softplus grids: 11 regularizer settings on all three datasets, the adversarial three at a radius per data
    scale, JEM on the digits; then the X-DNN grid and DecoyMNIST's erm against rrr on an MLP."""
    standard = load_suite("standard")
    raw = yaml.safe_load(resolve_suite_path("standard").read_text())
    softplus = [j for j in expand(standard) if j.backbone.label == "gibench_cnn(act=softplus)"]
    assert len(softplus) == 3 * 11 + 2 * 4 + 3 and standard.train.epochs == 3 and standard.train.augment == "none"
    assert len(expand(standard)) == 3 * 11 + _extra_jobs(raw)
    assert {s.name for s in standard.regularizers} == _builtins(registry.regularizers)
    mixture = {j.regularizer.label for j in softplus if j.dataset.name == "gaussian_mixture"}
    assert {"pgd(norm=l2, epsilon=0.5)", "pgd(norm=linf, epsilon=0.05)", "trades(epsilon=0.05)"} <= mixture
    defaults = {j.regularizer.label for j in softplus}
    assert {"sliced_score_matching", "denoising_score_matching"} <= defaults  # at their defaults, which train here
    assert "jem(sgld_steps=5, weight=0.01)" not in mixture


def test_missing_datasets_of_full_are_one_error_with_the_download_command(tmp_path, capsys):
    data = tmp_path / "empty"
    data.mkdir()
    runs = tmp_path / "runs"
    with pytest.raises(PreflightError) as caught:
        run_suite(load_suite("full"), runs, RunOptions(device="cpu", data_root=data))
    message = str(caught.value)
    assert "found 1 problem(s); nothing was trained" in message
    assert "5 dataset(s) are not on disk" in message
    for name in FILE_DATASETS:
        assert f"dataset {name!r} was not found (or is incomplete) in {data / name}" in message
    assert "dataset mnist, blockmnist(source=mnist), decoy_mnist(source=mnist): dataset 'mnist' was not found" \
        in message
    assert f"`gibench run --suite full --runs-dir {runs} --data-root {data} --device cpu --download`" in message
    assert not any(data.iterdir()), "nothing may be downloaded without --download"
    assert not (runs / "jobs").exists()

    code = main(["run", "--suite", "full", "--runs-dir", str(runs), "--data-root", str(data), "--device", "cpu",
                 "--eval-batch-size", "64"])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 2 and "Traceback" not in err
    assert (f"gibench run --suite full --runs-dir {runs} --data-root {data} --device cpu --eval-batch-size 64 "
            "--download") in err
    assert not any(data.iterdir())


def test_the_work_of_full_is_planned_without_its_datasets(tmp_path):
    from gibench.running.estimate import TrainStep, plan_suite

    data = tmp_path / "empty"
    data.mkdir()
    rows, shared, not_estimated = plan_suite(load_suite("full"), tmp_path / "runs", data_root=data)
    assert sum(r.jobs_left for r in rows) == len(planned_jobs(load_suite("full"))) and not_estimated == []
    row = next(r for r in rows if (r.dataset, r.backbone, r.regularizer) ==
               ("cifar10", "cifar_resnet18(act=softplus)", "erm"))
    # one job: 200 epochs of CIFAR-10's 50,000 images less the held-out tenth, at batch 128
    steps = 200 * math.ceil(45_000 / 128)
    (unit, count), = row.train_work.items()
    assert isinstance(unit, TrainStep) and unit.train.augment == "crop_flip" and count == 3 * steps
    retrain = [n for u, n in row.eval_work.items() if isinstance(u, TrainStep)]
    assert retrain == [3 * 2 * 7 * 3 * steps]  # seeds × (top, bottom) × levels × retrain seeds, 200 epochs each
    assert sorted(r.regularizer.split(" (")[0] for r in shared) == \
        ["gan_test judge"] * 7 + ["score_alignment denoiser"] * 7  # one judge and one denoiser per dataset
    assert not any(data.iterdir())
