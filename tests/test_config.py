"""Suite files: grids, validation errors that name file, place, value and what is allowed."""

from __future__ import annotations

import pytest

from gibench.core.errors import ConfigError, UnknownPluginError
from gibench.suites.suite import load_suite
from tests.conftest import write_suite


def test_tiny_suite_loads_and_expands_the_weight_grid(tmp_path):
    path = write_suite(tmp_path, regularizers=["erm", {"gradient_norm": {"weight": [1.0e-3, 1.0e-2]}}])
    suite = load_suite(path)
    assert [s.label for s in suite.regularizers] == ["erm", "gradient_norm(weight=0.001)", "gradient_norm(weight=0.01)"]
    assert suite.regularizers[2].config == {"weight": 0.01}
    assert suite.train.epochs == 1 and suite.train.lr == 0.01


def test_yaml_1_1_exponent_without_dot_is_coerced_to_float(tmp_path):
    # PyYAML reads `1e-3` as the string "1e-3"; a researcher writing it means the number.
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndatasets: [mnist_subset]\nbackbones: [gibench_linear]\n"
                    "regularizers: [{gradient_norm: {weight: 1e-3}}]\nevaluators: [accuracy]\n")
    assert load_suite(path).regularizers[0].config == {"weight": 0.001}


def test_shipped_smoke_suite_loads_by_name():
    suite = load_suite("smoke")
    assert suite.name == "smoke"
    assert {s.name for s in suite.regularizers} == {"erm", "gradient_norm"}


def test_unknown_top_level_key_names_file_key_and_valid_keys(tmp_path):
    path = write_suite(tmp_path, optimiser="adam")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    message = str(err.value)
    assert str(path) in message and "'optimiser'" in message and "Valid keys: name, description" in message


def test_unknown_train_key_gets_did_you_mean(tmp_path):
    path = write_suite(tmp_path, train={"epochs": 1, "learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"train: unknown parameter 'learning_rate'.*"
                                          r"Valid parameters: amp, augment, batch_size"):
        load_suite(path)


def test_wrong_type_names_place_value_and_expected_type(tmp_path):
    path = write_suite(tmp_path, train={"epochs": "three"})
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert "train: parameter 'epochs' = 'three'" in str(err.value) and "expected int" in str(err.value)


def test_unknown_regularizer_names_place_and_suggests(tmp_path):
    path = write_suite(tmp_path, regularizers=["erm", "gradient_nrom"])
    with pytest.raises(UnknownPluginError) as err:
        load_suite(path)
    message = str(err.value)
    assert "regularizers[1]" in message and "'gradient_nrom'" in message and "Did you mean 'gradient_norm'" in message


def test_unknown_regularizer_parameter_lists_the_valid_ones(tmp_path):
    path = write_suite(tmp_path, regularizers=[{"gradient_norm": {"wieght": 1.0}}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.gradient_norm: unknown parameter 'wieght'\. "
                                          r"Did you mean 'weight'\? Valid parameters: weight\."):
        load_suite(path)


def test_bad_value_is_reported_with_its_range(tmp_path):
    path = write_suite(tmp_path, regularizers=[{"gradient_norm": {"weight": -1.0}}])
    with pytest.raises(ConfigError, match=r"regularizers\[0\]\.gradient_norm: weight must be >= 0, got -1.0"):
        load_suite(path)


def test_bad_train_value_and_bad_choice(tmp_path):
    with pytest.raises(ConfigError, match="lr must be > 0"):
        load_suite(write_suite(tmp_path, train={"lr": 0.0}))
    with pytest.raises(ConfigError, match=r"'optimizer' = 'adagrad'.*expected"):
        load_suite(write_suite(tmp_path, train={"optimizer": "adagrad"}))


def test_unknown_backbone_and_bad_backbone_option(tmp_path):
    with pytest.raises(UnknownPluginError, match=r"backbones\[0\].*'resnet1800'.*Did you mean"):
        load_suite(write_suite(tmp_path, backbones=["resnet1800"]))
    with pytest.raises(ConfigError, match=r"backbones\[0\].*bogus_option"):
        load_suite(write_suite(tmp_path, backbones=[{"gibench_cnn": {"bogus_option": 3}}]))


def test_malformed_entries_and_seeds(tmp_path):
    with pytest.raises(ConfigError, match=r"regularizers\[0\]: expected a name or a one-key mapping"):
        load_suite(write_suite(tmp_path, regularizers=[{"erm": {}, "gradient_norm": {}}]))
    with pytest.raises(ConfigError, match="seeds must be a non-empty list of non-negative integers"):
        load_suite(write_suite(tmp_path, seeds=[0, -1]))
    with pytest.raises(ConfigError, match="missing required key 'evaluators'"):
        suite = write_suite(tmp_path)
        text = suite.read_text().split("evaluators:")[0] + "seeds: [0]\n"
        suite.write_text(text)
        load_suite(suite)


def test_missing_suite_file_lists_shipped_suites(tmp_path):
    with pytest.raises(ConfigError, match=r"no suite file 'smok'.*Did you mean 'smoke'.*Shipped suites: .*smoke"):
        load_suite("smok")


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(path)
