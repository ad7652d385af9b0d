"""``jem`` (regularizers/jem.py) against independent computations (float64, tiny models, CPU).

* Conformance (``gibench.testing.check_regularizer``) at a small sampler.
* The loss is CE(f(x), y) + w·(mean LSE(x̃) − mean LSE(x)) at independently computed samples x̃ (SGLD from a known
  buffer), with the data noise, parts and parameter gradients included; w = 0 without data noise is ``erm``.
* The sampler: one SGLD step against its formula in eval mode, no parameter gradients, the chains' start (buffer
  entries or fresh uniform images), the buffer written back at the drawn indices (the last occurrence of a repeated
  index), the buffer created lazily in the batch's shape, dtype and device.
* The same seed gives the same numbers; a diverging setting gives a NaN total (never an exception), which the trainer
  records as a failed job; module modes are restored.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from gibench.api import registry
from gibench.api.passes import Passes
from gibench.regularizers.jem import JEM, JEMConfig, last_occurrence, sgld
from gibench.suites.suite import PluginSpec, TrainConfig
from gibench.testing import check_regularizer
from gibench.training.train import fit

DT = torch.float64


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(beta=10), nn.Flatten(), nn.Linear(64, 3)).to(DT)


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Softplus(beta=10), nn.Flatten(),
                         nn.Linear(48, 3)).to(DT).train()


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.rand(n, 1, 4, 4, generator=generator, dtype=DT), torch.arange(n) % 3


def jem(**params) -> JEM:
    return registry.regularizers.create("jem", **params)


def reference_lse(model: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(functional_call(model, params, (x,)), dim=1)


def reference_sgld(model: nn.Module, x: torch.Tensor, steps: int, alpha: float) -> torch.Tensor:
    """Noise-free SGLD x ← x + α·∇x Σ LSE(x), written with torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    for _ in range(steps):
        x = x + alpha * grad(lambda z: reference_lse(model, params, z).sum())(x)
    return x


def test_conforms_with_a_small_sampler() -> None:
    check_regularizer("jem", params={"sgld_steps": 3, "buffer_size": 32})


@pytest.mark.parametrize("steps", [0, 2])
def test_loss_equals_ce_plus_w_times_the_lse_difference_at_independent_samples(steps: int) -> None:
    model, (x, y) = mlp(), batch()
    w, alpha, sigma = 0.7, 0.3, 0.02
    reg = jem(weight=w, sgld_steps=steps, sgld_step_size=alpha, sgld_noise=0.0, buffer_size=1, reinit_freq=0.0,
              data_noise=sigma)
    start = 0.25 + 0.5 * torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=DT)
    reg.buffer = start.clone()  # one entry: every chain starts there, whatever the drawn indices
    torch.manual_seed(5)
    loss = reg.training_loss(model, x, y)
    loss.total.backward()
    torch.manual_seed(5)
    noisy = x + sigma * torch.randn_like(x)  # the data noise is the step's first draw
    samples = reference_sgld(model, start.expand_as(x), steps, alpha)
    if steps:
        assert not torch.allclose(samples, start.expand_as(x))
    torch.testing.assert_close(reg.buffer, samples[:1])  # written back

    def reference(p):
        logits = functional_call(model, p, (noisy,))
        ce = F.cross_entropy(logits, y)
        lse_data = torch.logsumexp(logits, dim=1).mean()
        lse_samples = reference_lse(model, p, samples).mean()
        return ce + w * (lse_samples - lse_data), (ce, lse_data, lse_samples)

    detached = {k: v.detach() for k, v in model.named_parameters()}
    total, (ce, lse_data, lse_samples) = reference(detached)
    torch.testing.assert_close(loss.total.detach(), total, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["cross_entropy"], ce, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["energy_data"], -lse_data, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["energy_samples"], -lse_samples, rtol=1e-10, atol=1e-12)
    assert loss.parts["diverged"] == 0
    ref_grads = grad(lambda p: reference(p)[0])(detached)  # the samples are constants of the loss
    for key, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[key], rtol=1e-8, atol=1e-11, msg=f"d total / d {key}")


def test_fresh_chains_are_the_documented_draws() -> None:
    """reinit_freq = 1, no SGLD, no data noise: the samples are the fresh uniform images, drawn after the buffer and
    the indices (the documented order)."""
    model, (x, y) = mlp(), batch()
    reg = jem(weight=2.0, sgld_steps=0, buffer_size=10, reinit_freq=1.0, data_noise=0.0)
    torch.manual_seed(7)
    loss = reg.training_loss(model, x, y)
    torch.manual_seed(7)
    buffer = torch.rand(10, 1, 4, 4, dtype=DT)
    indices = torch.randint(0, 10, (8,))
    fresh = torch.rand_like(x)
    with torch.no_grad():
        logits = model(x)
        expected = F.cross_entropy(logits, y) + 2.0 * (torch.logsumexp(model(fresh), 1).mean()
                                                       - torch.logsumexp(logits, 1).mean())
    torch.testing.assert_close(loss.total.detach(), expected, rtol=1e-10, atol=1e-12)
    buffer[indices] = fresh[last_occurrence(indices)]
    torch.testing.assert_close(reg.buffer, buffer)
    assert fresh.min() >= 0 and fresh.max() <= 1


def test_one_sgld_step_matches_its_formula_in_eval_mode_and_leaves_no_parameter_gradient() -> None:
    model = bn_model()
    x, y = batch()
    model(x)  # running statistics that differ from the batch's
    model[2].eval()  # a submodule with its own flag
    before = [m.training for m in model.modules()]
    alpha, noise = 0.4, 0.03
    start = torch.rand_like(x)
    torch.manual_seed(3)
    out = sgld(model, start, 1, alpha, noise)
    torch.manual_seed(3)
    twin = copy.deepcopy(model).eval()
    params = {k: v.detach() for k, v in twin.named_parameters()}
    buffers = {k: v for k, v in twin.named_buffers()}

    def lse_sum(z):
        return torch.logsumexp(functional_call(twin, {**params, **buffers}, (z,)), dim=1).sum()

    expected = start + alpha * grad(lse_sum)(start) + noise * torch.randn_like(start)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    assert not out.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == before
    assert int(model[1].num_batches_tracked) == 1  # eval mode: the sampler updated no running statistics


def test_the_buffer_is_written_at_the_drawn_indices_with_the_last_occurrence_of_a_repeat() -> None:
    model, (x, _) = mlp(), batch(16)
    reg = jem(sgld_steps=1, buffer_size=20, reinit_freq=0.5, data_noise=0.0)
    buffer = reg.buffer_for(x).clone()
    torch.manual_seed(11)
    start, indices = reg.draw_chains(x)
    torch.manual_seed(11)
    samples = reg.sample(model, x)
    assert len(indices.unique()) < len(indices)  # this seed draws a repeated index
    restarted = [not torch.equal(start[i], buffer[indices[i]]) for i in range(len(indices))]
    assert 0 < sum(restarted) < len(indices)  # some chains restart from fresh images, some continue
    for i, index in enumerate(indices.tolist()):
        last = max(j for j, other in enumerate(indices.tolist()) if other == index)
        assert torch.equal(reg.buffer[index], samples[last])
        assert restarted[i] or torch.equal(start[i], buffer[index])
    untouched = sorted(set(range(20)) - set(indices.tolist()))
    assert torch.equal(reg.buffer[untouched], buffer[untouched])
    assert not torch.equal(reg.buffer[indices], buffer[indices])


def test_last_occurrence() -> None:
    assert last_occurrence(torch.tensor([3, 1, 3, 2, 1, 3])).tolist() == [5, 4, 5, 3, 4, 5]


def test_the_buffer_is_created_lazily_in_the_batch_shape_dtype_and_device() -> None:
    reg = jem(sgld_steps=0, buffer_size=12, reinit_freq=0.0)
    assert reg.buffer is None
    model, (x, y) = mlp(), batch()
    reg.training_loss(model, x, y)
    assert reg.buffer.shape == (12, 1, 4, 4) and reg.buffer.dtype == DT and reg.buffer.device == x.device
    assert reg.buffer.min() >= 0 and reg.buffer.max() <= 1  # uniform over the pixel range (no step moved it)
    reg.training_loss(mlp().float(), x.float(), y)  # another dtype: a new buffer
    assert reg.buffer.dtype == torch.float32


def test_zero_weight_runs_no_sampler_and_is_erm_without_data_noise() -> None:
    model, (x, y) = bn_model(), batch()
    twin = copy.deepcopy(model)
    erm = registry.regularizers.create("erm").training_loss(twin, x, y)
    erm.total.backward()
    reg = jem(weight=0.0, data_noise=0.0)
    loss = reg.training_loss(model, x, y)
    loss.total.backward()
    assert torch.equal(loss.total.detach(), erm.total.detach()) and reg.buffer is None
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), twin.parameters()))
    assert int(model[1].num_batches_tracked) == 1  # one forward, no sample forward
    # with data noise the loss stays the noisy cross-entropy (continuous in w): no sampler either
    torch.manual_seed(1)
    noisy = jem(weight=0.0, data_noise=0.1).training_loss(model, x, y)
    torch.manual_seed(1)
    with torch.no_grad():
        expected = F.cross_entropy(model(x + 0.1 * torch.randn_like(x)), y)
    torch.testing.assert_close(noisy.total.detach(), expected, rtol=1e-10, atol=1e-12)
    assert noisy.parts["energy_samples"] == 0


def test_modes_are_restored_and_the_sampler_touches_no_running_statistics() -> None:
    model = bn_model()
    model[2].eval()
    before = [m.training for m in model.modules()]
    x, y = batch()
    loss = jem(sgld_steps=3, buffer_size=16).training_loss(model, x, y)
    assert [m.training for m in model.modules()] == before
    assert int(model[1].num_batches_tracked) == 2  # the data and the sample forwards; the 3 SGLD steps in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert torch.isfinite(loss.total)


def test_the_same_seed_gives_the_same_losses_and_buffer() -> None:
    x, y = batch()

    def run(seed: int):
        model, reg = mlp(), jem(sgld_steps=2, buffer_size=16)
        torch.manual_seed(seed)
        totals = [reg.training_loss(model, x, y).total.detach() for _ in range(3)]
        return torch.stack(totals), reg.buffer

    (a, buffer_a), (b, buffer_b), (c, buffer_c) = run(1), run(1), run(2)
    assert torch.equal(a, b) and torch.equal(buffer_a, buffer_b)
    assert not torch.equal(a, c) and not torch.equal(buffer_a, buffer_c)


@pytest.mark.parametrize("params", [{"weight": 1e12}, {"sgld_step_size": 1e12}])
def test_a_diverging_setting_gives_a_nan_total_not_an_exception(params: dict) -> None:
    model, (x, y) = mlp(), batch()
    loss = jem(sgld_steps=2, buffer_size=16, **params).training_loss(model, x, y)
    assert torch.isnan(loss.total) and loss.parts["diverged"] == 1
    loss.total.backward()  # the trainer still steps; its non-finite check fails the job


def test_the_trainer_records_a_diverged_job_as_failed(small_bundle) -> None:
    reg = jem(weight=1e12, sgld_steps=1, buffer_size=64)
    outcome = fit(small_bundle, PluginSpec("gibench_linear"), reg, TrainConfig(epochs=1, batch_size=256, log_every=1),
                  seed=0)
    assert outcome.failure is not None and outcome.failure.startswith("non-finite loss at step 1 (epoch 1)")
    assert "diverged=1" in outcome.failure


def test_defaults_are_the_reference_defaults_in_pixel_units() -> None:
    config = JEMConfig()
    assert (config.weight, config.sgld_steps, config.buffer_size, config.reinit_freq) == (1.0, 20, 10000, 0.05)
    # [−1, 1] → [0, 1]: SGLD step 1 → 1/4, its noise 0.01 → 0.005, data noise 0.03 → 0.015
    assert (config.sgld_step_size, config.sgld_noise, config.data_noise) == (0.25, 0.005, 0.015)
    cls = registry.regularizers.get("jem")
    assert cls.sweep.parameter == "weight" and config.weight in cls.sweep.values
    assert cls.zero_strength == {"weight": 0.0, "data_noise": 0.0} and not cls.amp_safe
    # the estimate's work: a forward and an input gradient per SGLD step, then two training forwards and backwards
    assert cls().passes_per_step() == Passes(forward=22, backward=22)
    assert cls(JEMConfig(weight=0.0)).passes_per_step() == Passes(forward=1, backward=1)
