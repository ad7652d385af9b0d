"""``trades`` (regularizers/trades.py) against independent computations (float64, tiny models, CPU).

* The loss is CE(f(x), y) + β·KL(p(x) ‖ p(x′)) at the attack's own x′, with the KL in the reference code's form
  (``nn.KLDivLoss`` summed, divided by the batch size), parts and parameter gradients included.
* The attack: one step against its formula for both norms, per-sample balls and the pixel range, a KL that rises,
  no parameter gradients, the default step size, ε = 0.
* β = 0 is ``erm`` exactly; module modes are restored and ``attack_mode`` decides the running-statistic updates; the
  same seed gives the same numbers.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from gibench.api import registry
from gibench.regularizers.trades import TRADESConfig, trades_attack

DT = torch.float64


def setup(n: int = 16) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(beta=10), nn.Flatten(), nn.Linear(64, 3)).to(DT)
    generator = torch.Generator().manual_seed(2)
    x = 0.25 + 0.5 * torch.rand(n, 1, 4, 4, generator=generator, dtype=DT)  # interior pixels: room to move
    return model, x, torch.arange(n) % 3


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Softplus(beta=10), nn.Flatten(),
                         nn.Linear(48, 3)).to(DT).train()


def per_sample(t: torch.Tensor, norm: str) -> torch.Tensor:
    return t.flatten(1).norm(dim=1) if norm == "l2" else t.flatten(1).abs().amax(1)


def reference_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The reference code's KL: nn.KLDivLoss(size_average=False)(log_softmax(adv), softmax(clean)), per sample or
    summed."""
    kl = nn.KLDivLoss(reduction="none")(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1)).sum(1)
    return kl.sum() if reduction == "sum" else kl


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_loss_equals_ce_plus_beta_kl_at_the_attacks_point(norm: str) -> None:
    model, x, y = setup(6)
    params = {"beta": 2.5, "epsilon": 0.2 if norm == "linf" else 0.6, "steps": 3, "norm": norm}
    reg = registry.regularizers.create("trades", **params)
    torch.manual_seed(5)
    loss = reg.training_loss(model, x, y)
    loss.total.backward()
    torch.manual_seed(5)
    x_adv = trades_attack(model, x, TRADESConfig(**params))  # the same draws: the same x′
    assert (x_adv != x).any()

    def reference(p):
        clean = functional_call(model, p, (x,))
        adv = functional_call(model, p, (x_adv,))
        ce = F.cross_entropy(clean, y)
        kl = reference_kl(clean, adv) / x.shape[0]
        return ce + 2.5 * kl, (ce, kl)

    detached = {k: v.detach() for k, v in model.named_parameters()}
    total, (ce, kl) = reference(detached)
    assert kl > 0
    torch.testing.assert_close(loss.total.detach(), total, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["cross_entropy"], ce, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["kl"], kl, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss.parts["perturbation_norm"], per_sample(x_adv - x, norm).mean())
    # the gradient flows through both p(x) and p(x′) of the KL (the reference detaches neither)
    ref_grads = grad(lambda p: reference(p)[0])(detached)
    for key, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[key], rtol=1e-8, atol=1e-11, msg=f"d total / d {key}")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_attack_step_matches_its_formula(norm: str) -> None:
    model, x, y = setup()
    epsilon, alpha, start_std = 0.3, 0.1, 0.05
    config = TRADESConfig(epsilon=epsilon, steps=1, step_size=alpha, norm=norm, start_std=start_std)
    torch.manual_seed(3)
    x_adv = trades_attack(model, x, config)
    torch.manual_seed(3)
    start = start_std * torch.randn_like(x)
    if norm == "linf":
        start = start.clamp(-epsilon, epsilon)
    else:
        start = start * (epsilon / per_sample(start, norm)).clamp(max=1.0).view(-1, 1, 1, 1)
    x0 = (x + start).clamp(0, 1)
    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        clean = model(x)
    g = grad(lambda z: reference_kl(clean, functional_call(model, params, (z,))))(x0)
    assert (g.flatten(1).norm(dim=1) > 0).all()
    if norm == "linf":
        expected = x + (x0 - x + alpha * g.sign()).clamp(-epsilon, epsilon)
    else:
        delta = x0 - x + alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        expected = x + delta * (epsilon / per_sample(delta, norm)).clamp(max=1.0).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_adv, expected.clamp(0, 1))


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.1), ("l2", 0.5)])
def test_the_attack_stays_in_each_ball_raises_the_kl_and_leaves_no_parameter_gradient(norm, epsilon) -> None:
    model, x, _ = setup()
    torch.manual_seed(0)
    x_adv = trades_attack(model, x, TRADESConfig(epsilon=epsilon, steps=5, norm=norm))
    assert all(p.grad is None for p in model.parameters())
    assert not x_adv.requires_grad
    assert (per_sample(x_adv - x, norm) <= epsilon * (1 + 1e-9)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (per_sample(x_adv - x, norm) > 0.5 * epsilon).all()  # it moves, each sample
    with torch.no_grad():
        clean = model(x)
        start = reference_kl(clean, model((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), reduction="none")
        found = reference_kl(clean, model(x_adv), reduction="none")
    assert (found > start).all() and (found > 100 * start).float().mean() >= 0.9


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_attack_clamps_to_the_pixel_range_and_respects_the_ball(norm: str) -> None:
    model, _, _ = setup()
    x = (torch.rand(16, 1, 4, 4, dtype=DT) > 0.5).to(DT)  # binary pixels: every step hits the range
    epsilon = 2.0 if norm == "l2" else 0.3
    x_adv = trades_attack(model, x, TRADESConfig(epsilon=epsilon, steps=3, norm=norm, start_std=0.1))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (per_sample(x_adv - x, norm) <= epsilon * (1 + 1e-9)).all()


def test_default_step_size_and_zero_epsilon() -> None:
    assert TRADESConfig(epsilon=0.3, steps=5).alpha == pytest.approx(0.12)
    assert TRADESConfig(epsilon=0.3, steps=5, step_size=0.0).alpha == pytest.approx(0.12)
    assert TRADESConfig(epsilon=0.3, steps=5, step_size=0.01).alpha == 0.01
    model, x, y = setup()
    assert torch.equal(trades_attack(model, x, TRADESConfig(epsilon=0.0)), x)
    loss = registry.regularizers.create("trades", epsilon=0.0).training_loss(model, x, y)
    assert loss.parts["kl"] == 0 and loss.parts["perturbation_norm"] == 0


def test_defaults_are_the_papers_mnist_setting_with_five_steps() -> None:
    config = registry.regularizers.create("trades").config
    assert (config.norm, config.epsilon, config.beta, config.steps, config.start_std, config.attack_mode) == (
        "linf", 0.3, 1.0, 5, 0.001, "eval")
    assert config.beta in registry.regularizers.get("trades").sweep.values


def test_zero_beta_is_erm_exactly_and_runs_no_attack() -> None:
    model = bn_model()
    x, y = setup(6)[1:]
    twin = copy.deepcopy(model)
    torch.manual_seed(0)
    erm = registry.regularizers.create("erm").training_loss(twin, x, y)
    erm.total.backward()
    torch.manual_seed(0)
    loss = registry.regularizers.create("trades", beta=0.0).training_loss(model, x, y)
    loss.total.backward()
    assert torch.equal(loss.total.detach(), erm.total.detach())
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert int(model[1].num_batches_tracked) == 1  # one clean forward, no attack, no adversarial forward
    assert torch.equal(model[1].running_mean, twin[1].running_mean)


@pytest.mark.parametrize(("attack_mode", "updates"), [("eval", 2), ("train", 1 + 3 + 2)])
def test_modes_are_restored_and_attack_mode_decides_running_stat_updates(attack_mode: str, updates: int) -> None:
    model = bn_model()
    model[2].eval()  # a submodule with its own flag
    before = [m.training for m in model.modules()]
    x, y = setup(6)[1:]
    loss = registry.regularizers.create("trades", epsilon=0.3, steps=3, attack_mode=attack_mode).training_loss(
        model, x, y)
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    # eval: the clean and the adversarial training forwards; train: also the attack's clean pass and its 3 steps
    assert int(model[1].num_batches_tracked) == updates
    assert loss.parts["kl"] > 0


def test_the_same_seed_gives_the_same_loss_and_point() -> None:
    model, x, y = setup()
    reg = registry.regularizers.create("trades", steps=3)

    def run(seed: int):
        torch.manual_seed(seed)
        total = reg.training_loss(model, x, y).total.detach()
        torch.manual_seed(seed)
        return total, trades_attack(model, x, reg.config)

    (a, xa), (b, xb), (_, xc) = run(1), run(1), run(2)
    assert torch.equal(a, b) and torch.equal(xa, xb)
    assert not torch.equal(xa, xc)  # the start is a random draw
