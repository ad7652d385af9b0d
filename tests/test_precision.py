"""Precision guards: TF32 off inside (and around) the finite-difference losses, autocast only where it is safe."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gibench.api import registry
from gibench.api.passes import full_precision, tf32_off
from gibench.data.tensors import make_bundle
from gibench.suites.suite import PluginSpec, TrainConfig
from gibench.training.models import build_model
from gibench.training.train import cudnn_benchmark, fit, uses_autocast

#: Every built-in whose loss takes a finite difference of the network (or of its input gradient) at a small σ.
FINITE_DIFFERENCE = ("score_matching", "score_matching_antithetic", "score_matching_hutchinson",
                     "sliced_score_matching", "denoising_score_matching", "anti_score_matching")
#: Built-ins for which bfloat16 autocast keeps loss and gradients within AMP_TOLERANCE of float32.
AMP_SAFE = ("erm", "gaussian_noise", "gradient_norm")
AMP_TOLERANCE = 0.02


def flags() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


TF32_ON = (True, True, "high")
TRUE_FLOAT32 = (False, False, "highest")


@pytest.fixture
def tf32_on():
    """TF32 turned on (as a user of an Ampere GPU would) for the test; the flags as they were restored after."""
    before = flags()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
    torch.set_float32_matmul_precision("high")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
    torch.set_float32_matmul_precision(before[2])


class _RecordBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, log):
        ctx.log = log
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.log.append(flags())
        return grad, None


class FlagRecorder(nn.Module):
    """Identity layer that records the precision flags at every forward, and at every backward through it."""

    def __init__(self) -> None:
        super().__init__()
        self.forwards: list[tuple] = []
        self.backwards: list[tuple] = []

    def forward(self, x):
        self.forwards.append(flags())
        return _RecordBackward.apply(x, self.backwards)


def tiny_smooth_model(recorder: FlagRecorder) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), recorder, nn.Softplus(beta=10), nn.Linear(8, 3)).train()


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def _uses_full_precision(cls: type) -> bool:
    """True when the class (or a base class it inherits its loss from) is defined in a module that calls
    full_precision, directly or through a shared loss of the API it calls (gibench.api.hessian's)."""
    modules = {importlib.import_module(c.__module__) for c in cls.__mro__ if c.__module__.startswith("gibench.reg")}
    for module in modules:
        source = inspect.getsource(module)
        shared = [value for name, value in vars(module).items() if inspect.isfunction(value) and f"{name}(" in source
                  and value.__module__.startswith("gibench.api.") and value.__module__ != "gibench.api.passes"]
        if "full_precision(" in source or any("full_precision(" in inspect.getsource(f) for f in shared):
            return True
    return False


def test_the_finite_difference_family_is_exactly_the_users_of_full_precision() -> None:
    users = {name for name in registry.regularizers.names() if _uses_full_precision(registry.regularizers.get(name))}
    assert users == set(FINITE_DIFFERENCE)


@pytest.mark.parametrize("name", FINITE_DIFFERENCE)
def test_tf32_is_off_inside_every_finite_difference_loss_and_restored_after(name: str, tf32_on) -> None:
    recorder = FlagRecorder()
    model = tiny_smooth_model(recorder)
    x, y = batch()
    assert flags() == TF32_ON
    loss = registry.regularizers.create(name).training_loss(model, x, y)
    # the clean pass and a noisy pass (Hutchinson and sliced take one pass and Hessian-vector products instead)
    assert len(recorder.forwards) >= (1 if name in ("score_matching_hutchinson", "sliced_score_matching") else 2)
    assert set(recorder.forwards) == {TRUE_FLOAT32}
    assert set(recorder.backwards) <= {TRUE_FLOAT32}  # input gradients taken inside the loss
    assert flags() == TF32_ON  # restored
    assert torch.isfinite(loss.total)


def test_flags_are_restored_after_an_exception(tf32_on) -> None:
    with pytest.raises(KeyError):
        with full_precision(torch.zeros(1)):
            assert flags() == TRUE_FLOAT32
            raise KeyError("inside")
    assert flags() == TF32_ON


def test_per_backend_settings_come_back_exactly(tf32_on) -> None:
    nodes = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    if not all(hasattr(node, "fp32_precision") for node in nodes):
        pytest.skip("torch < 2.9 has no per-backend fp32_precision")
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cudnn.rnn.fp32_precision = "ieee"  # a mix the legacy getter refuses to read
    saved = [node.fp32_precision for node in nodes]
    with tf32_off():
        assert flags() == TRUE_FLOAT32
        assert all(node.fp32_precision in ("none", "ieee") for node in nodes)
    assert [node.fp32_precision for node in nodes] == saved
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = "tf32"


def _fit_with_recorder(monkeypatch, regularizer: str, amp: bool) -> tuple[FlagRecorder, dict]:
    recorder = FlagRecorder()
    monkeypatch.setattr("gibench.training.models.build_model", lambda *args: tiny_smooth_model(recorder))
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    bundle = make_bundle("tiny", x, torch.arange(12) % 3, x[:3], torch.arange(3), num_classes=3)
    outcome = fit(bundle, PluginSpec("tiny"), registry.regularizers.create(regularizer),
                  TrainConfig(epochs=1, batch_size=6, amp=amp), seed=0)
    assert outcome.failure is None
    return recorder, outcome.log


@pytest.mark.parametrize("name", ["score_matching", "pgd", "noise_consistency"])
def test_the_trainer_runs_forward_and_backward_of_other_regularizers_in_true_float32(name, tf32_on, monkeypatch):
    recorder, log = _fit_with_recorder(monkeypatch, name, amp=True)
    assert recorder.backwards and set(recorder.forwards) == set(recorder.backwards) == {TRUE_FLOAT32}
    assert log["tf32_off"] is True and log["autocast"] is None
    assert flags() == TF32_ON


def test_amp_safe_regularizers_keep_the_users_tf32_setting_and_amp_off_means_float32(tf32_on, monkeypatch):
    recorder, log = _fit_with_recorder(monkeypatch, "erm", amp=True)
    assert set(recorder.backwards) == {TF32_ON} and log["tf32_off"] is False
    assert log["autocast"] is None  # never on the CPU
    recorder, log = _fit_with_recorder(monkeypatch, "erm", amp=False)
    assert set(recorder.backwards) == {TRUE_FLOAT32} and log["tf32_off"] is True


def test_autocast_only_on_cuda_with_amp_for_amp_safe_regularizers() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    erm, score = registry.regularizers.create("erm"), registry.regularizers.create("score_matching")
    assert uses_autocast(erm, TrainConfig(amp=True), cuda)
    assert not uses_autocast(erm, TrainConfig(amp=False), cuda)
    assert not uses_autocast(erm, TrainConfig(amp=True), cpu)
    assert not uses_autocast(score, TrainConfig(amp=True), cuda)


def test_cudnn_benchmark_is_on_for_cuda_training_only_and_restored() -> None:
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before
    torch.backends.cudnn.benchmark = False
    with cudnn_benchmark(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = before


@pytest.fixture(scope="module")
def trained_state(small_bundle):
    """A softplus gibench_cnn after 60 Adam steps (logits of order 10, as in training) and a batch of 32 digits."""
    torch.manual_seed(0)
    model = build_model("gibench_cnn", {"act": "softplus", "width": 8}, small_bundle).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        index = torch.randint(0, len(small_bundle.train), (64,), generator=g)
        loss = F.cross_entropy(model(small_bundle.train.x[index]), small_bundle.train.y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert model(small_bundle.train.x[:32]).abs().max() > 10
    return (model, {k: v.clone() for k, v in model.state_dict().items()}, small_bundle.train.x[:32],
            small_bundle.train.y[:32])


def _loss_and_gradient(name, trained_state, bf16: bool):
    model, state, x, y = trained_state
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same noise draws in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = registry.regularizers.create(name).training_loss(model, x, y)
    loss.total.backward()
    return loss.total.detach().double(), torch.cat([p.grad.flatten() for p in model.parameters()]).double()


def test_the_amp_safe_built_ins_are_exactly_those_listed() -> None:
    marked = {name for name in registry.regularizers.names() if registry.regularizers.get(name).amp_safe}
    assert marked == set(AMP_SAFE)


@pytest.mark.parametrize("name", AMP_SAFE)
def test_bfloat16_autocast_keeps_loss_and_gradients_of_amp_safe_regularizers(name, trained_state, one_thread):
    loss32, grad32 = _loss_and_gradient(name, trained_state, bf16=False)
    loss16, grad16 = _loss_and_gradient(name, trained_state, bf16=True)
    assert not torch.equal(grad16, grad32)  # autocast really ran in bfloat16
    assert abs(loss16 - loss32) / abs(loss32) < AMP_TOLERANCE
    assert (grad16 - grad32).norm() / grad32.norm() < AMP_TOLERANCE

