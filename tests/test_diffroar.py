"""DiffROAR (Shah, Jain & Netrapalli): it measures what it claims on BlockMNIST, masks exactly, and trains each
retrained model once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import gibench
from gibench.api.plugin import Evaluator
from gibench.api.ranks import fraction_count
from gibench.api.saliency import input_gradient
from gibench.core.errors import ConfigError, GibenchError
from gibench.data.blockmnist import BLOCK, null_pattern
from gibench.data.tensors import make_bundle
from gibench.evaluators.diffroar import (
    AUX_KIND,
    DiffROAR,
    descending_ranks,
    fill_values,
    keep_mask,
    masked_images,
    unit_scores,
)
from gibench.running.runner import run_suite
from gibench.store.auxiliary import AuxiliaryModels
from gibench.suites.suite import load_suite
from gibench.testing import make_eval_context
from tests.conftest import write_suite

NULL = null_pattern()
TRAIN_TINY = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1.0e-2}


# -- attributions for BlockMNIST, computed from the image alone ------------------------------------------------------


def oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 on the digit block, 0 on the null block: the block whose top half is the fixed null pattern is the null one."""
    top_is_null = (x[:, :, :BLOCK] == NULL).flatten(1).all(1).view(-1, 1, 1, 1)
    rows = torch.arange(x.shape[2]).view(1, 1, -1, 1)
    return torch.where(top_is_null, rows >= BLOCK, rows < BLOCK).expand_as(x).float()


def inverted_oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 1.0 - oracle(model, x, y)


def random_attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Uniform noise, a fixed function of the batch's content (so a rerun ranks alike)."""
    seed = int.from_bytes(hashlib.sha256(x.numpy().tobytes()).digest()[:4], "little")
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def blockmnist():
    return gibench.load_dataset("blockmnist")


def ranked_model(bundle) -> nn.Module:
    """The model whose saliency ranks the coordinates (the oracles ignore it): a seeded linear map."""
    torch.manual_seed(0)
    c, (h, w) = bundle.in_chans, bundle.image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, bundle.num_classes)).eval()


def ctx_for(bundle, saliency, artifact_dir: Path, aux: AuxiliaryModels | None = None, batch_size: int = 256):
    return make_eval_context(ranked_model(bundle), bundle, artifact_dir, saliency=saliency, batch_size=batch_size,
                             aux=aux)


def test_declarations():
    assert gibench.create_evaluator("diffroar").__class__ is DiffROAR
    assert issubclass(DiffROAR, Evaluator) and isinstance(DiffROAR.version, str) and DiffROAR.version
    assert sum(m.headline for m in DiffROAR.metrics) == 1
    assert DiffROAR.headline().name == "diffroar_mean" and DiffROAR.headline().higher_is_better
    assert len({m.name for m in DiffROAR.metrics}) == len(DiffROAR.metrics)
    assert DiffROAR.requires == frozenset()
    assert DiffROAR.__doc__ and len(__import__(DiffROAR.__module__, fromlist=["_"]).__doc__) > 500
    assert DiffROAR.Config().levels == (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)  # the paper's


def test_oracle_on_blockmnist_maps_each_image_to_its_signal_block(blockmnist):
    for split in (blockmnist.train, blockmnist.test):
        assert torch.equal(oracle(None, split.x, split.y).bool(), split.extras["signal_mask"])


def test_oracle_is_positive_random_near_zero_inverted_negative(blockmnist, tmp_path):
    evaluator = gibench.create_evaluator("diffroar", levels=[0.5, 0.2], retrain_seeds=[0], backbone="gibench_linear",
                                         train=TRAIN_TINY, max_train_images=2000)
    scores = {}
    for saliency in (oracle, random_attribution, inverted_oracle):
        result = evaluator.evaluate(ctx_for(blockmnist, saliency, tmp_path / saliency.__name__))
        scores[saliency.__name__] = result
    good, rand, bad = (scores[n] for n in ("oracle", "random_attribution", "inverted_oracle"))
    chance = 1 / blockmnist.num_classes
    # the oracle keeps the digit in the top-k and only the (label-free) null block in the bottom-k
    assert good.scalars["diffroar_mean"] > 0.4 and good.scalars["diffroar_min"] > 0.3
    assert all(abs(a - chance) < 0.06 for a in good.curves["accuracy_bottom_kept"].y)
    assert all(a > 0.5 for a in good.curves["accuracy_top_kept"].y)
    # a random ranking keeps the same amount of digit on both sides
    assert abs(rand.scalars["diffroar_mean"]) < 0.05 and all(abs(d) < 0.08 for d in rand.curves["diffroar"].y)
    assert bad.scalars["diffroar_mean"] < -0.4 and max(bad.curves["diffroar"].y) < -0.3
    for result in (good, rand, bad):
        d, t, b = (result.curves[k].y for k in ("diffroar", "accuracy_top_kept", "accuracy_bottom_kept"))
        assert d == pytest.approx([x - y for x, y in zip(t, b)])
        assert result.curves["diffroar"].x == (0.2, 0.5)
        assert result.scalars["diffroar_mean"] == pytest.approx(sum(d) / 2)


# -- masking ---------------------------------------------------------------------------------------------------------


def test_exactly_round_k_d_units_are_kept_per_image():
    scores = torch.rand(6, 3 * 5 * 7, generator=torch.Generator().manual_seed(0))
    ranks = descending_ranks(scores)
    for level in (0.05, 0.1, 0.3, 0.5, 0.9):
        n = int(level * 105 + 0.5)
        assert fraction_count(level, 105) == n
        for side in ("top", "bottom"):
            assert keep_mask(ranks, level, side).sum(1).tolist() == [n] * 6, (level, side)
        top, bottom = keep_mask(ranks, level, "top"), keep_mask(ranks, level, "bottom")
        # the kept top-k are the n largest scores, the kept bottom-k the n smallest
        assert torch.equal(torch.where(top, scores, 0.0).sort(1, descending=True).values[:, :n],
                           scores.sort(1, descending=True).values[:, :n])
        assert torch.equal(torch.where(bottom, scores, 2.0).sort(1).values[:, :n], scores.sort(1).values[:, :n])


@pytest.mark.parametrize("tied", [False, True])
def test_top_and_bottom_are_complementary_and_ties_go_to_the_lower_index(tied):
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 3, (4, 784), generator=generator).float() if tied else torch.rand(4, 784)
    ranks = descending_ranks(scores)
    # floor(0.25·784 + .5) = 196 and floor(0.75·784 + .5) = 588 = 784 − 196
    assert torch.equal(keep_mask(ranks, 0.25, "top"), ~keep_mask(ranks, 0.75, "bottom"))
    assert torch.equal(keep_mask(ranks, 0.75, "top"), ~keep_mask(ranks, 0.25, "bottom"))
    flat = torch.zeros(1, 10)  # all tied: the lower flat indices rank first
    assert keep_mask(descending_ranks(flat), 0.3, "top").nonzero()[:, 1].tolist() == [0, 1, 2]
    assert keep_mask(descending_ranks(flat), 0.3, "bottom").nonzero()[:, 1].tolist() == [7, 8, 9]


def test_fill_is_the_per_channel_mean_of_the_unmasked_train_split(tmp_path):
    generator = torch.Generator().manual_seed(2)
    train_x = torch.rand(40, 3, 6, 5, generator=generator) * torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1)
    bundle = make_bundle("rgb", train_x, torch.arange(40) % 2, torch.rand(10, 3, 6, 5), torch.arange(10) % 2, 2)
    fill = fill_values(DiffROAR.Config(), bundle)
    assert fill == pytest.approx(train_x.double().mean(dim=(0, 2, 3)).tolist(), abs=1e-7)
    x = bundle.test.x
    grad = torch.randn(x.shape, generator=generator)
    ranks = descending_ranks(unit_scores(grad, "coordinate"))
    out = masked_images(x, ranks, 0.3, "top", fill)
    keep = keep_mask(ranks, 0.3, "top").view_as(x)
    assert torch.equal(out[keep], x[keep])
    for c in range(3):
        masked = out[:, c][~keep[:, c]]
        assert masked.numel() > 0 and torch.all(masked == torch.tensor(fill[c], dtype=torch.float32))
    constant = fill_values(DiffROAR.Config(fill="constant", fill_value=0.25), bundle)
    assert constant == (0.25, 0.25, 0.25)


def test_per_pixel_mode_ranks_by_channel_sum_and_masks_all_channels_together():
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 4, 6, generator=generator)
    grad = torch.randn(5, 3, 4, 6, generator=generator)
    scores = unit_scores(grad, "pixel")
    assert scores.shape == (5, 24) and torch.allclose(scores, grad.abs().sum(1).flatten(1))
    ranks = descending_ranks(scores)
    fill = (0.1, 0.2, 0.3)
    out = masked_images(x, ranks, 0.25, "bottom", fill)
    kept = (out == x).all(1)  # a pixel is kept on every channel or on none
    filled = torch.stack([out[:, c] == fill[c] for c in range(3)], 1).all(1)
    assert torch.equal(kept | filled, torch.ones_like(kept)) and not (kept & filled).any()
    assert kept.flatten(1).sum(1).tolist() == [6] * 5  # floor(0.25·24 + 0.5) pixels, all 3 channels each
    assert torch.equal(kept.flatten(1), keep_mask(ranks, 0.25, "bottom"))
    coordinate = masked_images(x, descending_ranks(unit_scores(grad, "coordinate")), 0.25, "bottom", fill)
    assert (coordinate == x).flatten(1).sum(1).tolist() == [18] * 5  # floor(0.25·72 + 0.5) coordinates


# -- caching and identity --------------------------------------------------------------------------------------------


def small_evaluator(**changes):
    params = dict(levels=[0.5, 0.1], retrain_seeds=[0, 1], backbone="gibench_linear", train=TRAIN_TINY)
    return gibench.create_evaluator("diffroar", **{**params, **changes})


def aux_identities(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["identity"] for p in root.glob(f"{AUX_KIND}-*/identity.json")}


def test_each_retrained_model_is_trained_once_and_reused(small_bundle, tmp_path):
    root = tmp_path / "aux"
    aux = AuxiliaryModels(root)
    ctx = ctx_for(small_bundle, oracle_free_gradient, tmp_path / "art", aux)
    with aux.tracking() as used:
        first = small_evaluator().evaluate(ctx)
    assert len(aux.trained) == 2 * 2 * 2 == len(set(aux.trained))  # sides × levels × seeds
    assert sorted(p.name.split("-", 1)[1] for p in root.glob(f"{AUX_KIND}-*")) == sorted(aux.trained)
    # an independent computation: mask the test images by hand, score both seeds' retrained models, average
    x, y = small_bundle.test.x, small_bundle.test.y
    order = torch.argsort(-x.flatten(1), dim=1, stable=True)  # descending, ties to the lower index
    n = int(0.5 * 784 + 0.5)
    for side in ("top", "bottom"):
        chosen = order[:, :n] if side == "top" else order[:, -n:]
        keep = torch.zeros_like(x.flatten(1), dtype=torch.bool).scatter_(1, chosen, True).view_as(x)
        masked = torch.where(keep, x, torch.tensor(small_bundle.mean[0]))
        models = [u.model for u in used if u.identity["data"]["keep"] == side and u.identity["data"]["level"] == 0.5]
        with torch.no_grad():
            accuracy = [float((m(masked).argmax(1) == y).float().mean()) for m in models]
        assert len(models) == 2
        assert first.curves[f"accuracy_{side}_kept"].x[1] == 0.5
        assert first.curves[f"accuracy_{side}_kept"].y[1] == pytest.approx(sum(accuracy) / 2, abs=1e-9)

    again = small_evaluator().evaluate(ctx)  # a second evaluation in the same process
    assert len(aux.trained) == 8 and again.scalars == first.scalars
    rerun_aux = AuxiliaryModels(root)  # a rerun on the same runs directory
    rerun = small_evaluator().evaluate(ctx_for(small_bundle, oracle_free_gradient, tmp_path / "art2", rerun_aux))
    assert rerun_aux.trained == [] and rerun.scalars == first.scalars

    more = small_evaluator(levels=[0.5, 0.1, 0.3]).evaluate(ctx_for(small_bundle, oracle_free_gradient,
                                                                    tmp_path / "art3", rerun_aux))
    assert len(rerun_aux.trained) == 2 * 2  # only the new level, both sides, both seeds
    assert more.curves["diffroar"].y[0] == first.curves["diffroar"].y[0]  # k = 0.1 reused

    identities = aux_identities(root)
    assert len(identities) == 12
    keys = {(i["data"]["level"], i["data"]["keep"], i["seed"]) for i in identities.values()}
    assert len(keys) == 12  # level, side and seed each change the identity
    assert {i["data"]["saliency"]["qualname"] for i in identities.values()} == {"oracle_free_gradient"}

    other = AuxiliaryModels(root)
    small_evaluator(levels=[0.5], retrain_seeds=[0]).evaluate(
        ctx_for(small_bundle, input_gradient, tmp_path / "art4", other))
    assert len(other.trained) == 2  # another saliency: new models
    assert not set(other.trained) & {name.split("-", 1)[1] for name in identities}


def oracle_free_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A fixed saliency for the bundled digits: the image itself (ink ranks high)."""
    return x.clone()


def test_in_a_suite_the_job_decides_the_retraining_and_reruns_reuse_it(tmp_path):
    evaluator = {"diffroar": {"levels": [0.5], "retrain_seeds": [0], "epochs": 1}}
    suite = write_suite(tmp_path, regularizers=["erm"], evaluators=[evaluator], train={**TRAIN_TINY, "epochs": 2})
    runs = tmp_path / "runs"
    run_suite(load_suite(suite), runs, device="cpu")
    identities = aux_identities(runs / "aux")
    (job_folder,) = (runs / "jobs").iterdir()
    assert len(identities) == 2
    for identity in identities.values():
        assert identity["data"]["source"] == {"job": job_folder.name}
        assert identity["backbone"]["name"] == "gibench_linear" and identity["regularizer"]["name"] == "erm"
        assert identity["train"]["epochs"] == 1 and identity["train"]["lr"] == 1.0e-2  # the override; the suite's lr
    (result_file,) = (job_folder / "results").glob("diffroar*.json")
    record = json.loads(result_file.read_text())
    assert record["status"] == "ok" and len(record["auxiliary"]) == 2
    assert {a["hash"] for a in record["auxiliary"]} == {name.split("-", 1)[1] for name in identities}
    stamps = {p: p.stat().st_mtime_ns for p in (runs / "aux").glob(f"{AUX_KIND}-*/checkpoint.pt")}

    evaluator["diffroar"]["levels"] = [0.5, 0.2]  # a new config: the k = 0.5 models are reused
    suite = write_suite(tmp_path, regularizers=["erm"], evaluators=[evaluator], train={**TRAIN_TINY, "epochs": 2})
    run_suite(load_suite(suite), runs, device="cpu")
    assert len(aux_identities(runs / "aux")) == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_retraining_with_the_jobs_regularizer(tmp_path):
    evaluator = {"diffroar": {"levels": [0.5], "retrain_seeds": [0], "retrain_with": "job"}}
    suite = write_suite(tmp_path, regularizers=[{"gradient_norm": {"weight": 1.0e-3}}], evaluators=[evaluator])
    run_suite(load_suite(suite), tmp_path / "runs", device="cpu")
    identities = aux_identities(tmp_path / "runs" / "aux")
    assert {i["regularizer"]["name"] for i in identities.values()} == {"gradient_norm"}
    assert {i["regularizer"]["config"]["weight"] for i in identities.values()} == {1.0e-3}


# -- user errors -----------------------------------------------------------------------------------------------------


def test_outside_a_suite_the_backbone_and_train_config_must_be_given(small_bundle, tmp_path):
    ctx = ctx_for(small_bundle, input_gradient, tmp_path)
    with pytest.raises(GibenchError, match="no job.*'backbone' and 'train'"):
        gibench.create_evaluator("diffroar", levels=[0.5]).evaluate(ctx)
    with pytest.raises(GibenchError, match="'train'"):
        gibench.create_evaluator("diffroar", levels=[0.5], backbone="gibench_linear").evaluate(ctx)
    with pytest.raises(GibenchError, match="retrain_with='job'"):
        small_evaluator(retrain_with="job").evaluate(ctx)


def test_a_closure_saliency_needs_an_explicit_identity(small_bundle, tmp_path):
    scale = 2.0

    def scaled(model, x, y):
        return scale * x

    with pytest.raises(GibenchError, match="gibench_identity"):
        small_evaluator(levels=[0.5], retrain_seeds=[0]).evaluate(ctx_for(small_bundle, scaled, tmp_path))
    scaled.gibench_identity = {"name": "scaled", "scale": scale}
    aux = AuxiliaryModels(tmp_path / "aux")
    small_evaluator(levels=[0.5], retrain_seeds=[0]).evaluate(ctx_for(small_bundle, scaled, tmp_path, aux))
    identities = aux_identities(tmp_path / "aux")
    assert [i["data"]["saliency"] for i in identities.values()] == [{"gibench_identity": {"name": "scaled",
                                                                                          "scale": 2.0}}] * 2


@pytest.mark.parametrize(
    "params, message",
    [
        ({"levels": [0.5, 1.0]}, "levels"),
        ({"levels": [0.5, 0.5]}, "repeat"),
        ({"granularity": "channel"}, "granularity"),
        ({"fill": "zeros"}, "fill"),
        ({"retrain_seeds": []}, "retrain_seeds"),
        ({"retrain_with": "pgd"}, "retrain_with"),
        ({"train": {"epoch": 2}}, "'epoch'.*Did you mean 'epochs'"),
        ({"train": {"lr": -1}}, "lr"),
        ({"backbone_options": {"width": 8}}, "backbone"),
        ({"max_train_images": -1}, "max_train_images"),
    ],
)
def test_bad_configs_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        gibench.create_evaluator("diffroar", **params)
