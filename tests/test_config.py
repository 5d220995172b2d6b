"""config.py: the settings tree (:class:`TrainConfig`) - its defaults, its JSON round trip, and the
checks that reject unknown keys, wrong types and bad values, naming the key or the flag."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alexnet.config import DEFAULTS, ConfigError, TrainConfig, load_config_file
from alexnet.data.sampling import epoch_generator
from alexnet.ranges import SEED_RANGE

from helpers import VARIANTS


def test_defaults_build_and_follow_the_paper():
    cfg = TrainConfig()
    assert cfg == DEFAULTS
    # Krizhevsky et al. 2012, section 5 and 4.2: batch 128, momentum 0.9, weight decay 0.0005, dropout 0.5
    assert (cfg.batch_size, cfg.momentum, cfg.weight_decay, cfg.dropout) == (128, 0.9, 5e-4, 0.5)
    assert cfg.model in VARIANTS and cfg.data is None


def test_settings_survive_a_json_round_trip():
    # config.json and every checkpoint store to_dict(); resume and evaluate read it back with from_dict
    cfg = TrainConfig(model="alexnet2012", lr=1.0, lrn=True, init="paper", data="/x", name="n", channels_last=False)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_dict(DEFAULTS.to_dict()) == DEFAULTS


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"epoch": 3, "lr": 0.1, "bogus_key": 1}, source="my.json")
    msg = str(e.value)
    assert "epoch" in msg and "bogus_key" in msg and "my.json" in msg


@pytest.mark.parametrize(
    "key, value",
    [
        ("epochs", "3"),
        ("epochs", 3.0),
        ("epochs", True),
        ("lr", "x"),
        ("lr", None),
        ("lr", False),
        ("channels_last", 1),
        ("channels_last", "true"),
        ("lrn", "yes"),
        ("data", 5),
        ("batch_size", [128]),
        ("model", None),
        ("init", 1),
    ],
)
def test_from_dict_rejects_wrong_types_naming_the_key(key, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({key: value}, source="settings.json")
    assert key in str(e.value) and "settings.json" in str(e.value)


@pytest.mark.parametrize(
    "values", [{"lr": 1}, {"lrn": None}, {"lrn": False}, {"data": None}, {"init": "paper"}, {"dropout": 0}]
)
def test_from_dict_accepts_the_right_types(values):
    cfg = TrainConfig.from_dict(values)
    for key, value in values.items():
        assert getattr(cfg, key) == value


@pytest.mark.parametrize(
    "key, value",
    [
        ("epochs", 0),
        ("epochs", -1),
        ("batch_size", 0),
        ("batch_size", -8),
        ("lr", 0.0),
        ("lr", -1.0),
        ("image_size", 0),
        ("image_size", -67),
        ("workers", -1),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("dropout", 1.0),
        ("dropout", -0.5),
        ("val_fraction", 0.0),
        ("val_fraction", 1.0),
        ("model", "nope"),
        ("activation", "gelu"),
        ("pooling", "max"),
        ("schedule", "step"),
        ("precision", "fp16"),
        ("init", "xavier"),
        # the upper ends of the ranges: memory, torch's seeds, OneCycleLR, the loss
        ("image_size", 4097),
        ("batch_size", 65537),
        ("workers", 257),
        ("seed", -1),
        ("seed", 2**64),
        ("warmup", 1.0),
        ("warmup", 1.5),
        ("label_smoothing", 1.0),
        ("lr", 10**400),
        ("val_fraction", 10**400),
    ],
)
def test_bad_values_are_rejected_naming_the_flag(key, value):
    flag = "--" + key.replace("_", "-")
    for make in (lambda: TrainConfig(**{key: value}), lambda: TrainConfig.from_dict({key: value})):
        with pytest.raises(ConfigError, match=flag):
            make()


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_learning_rate_is_rejected(value):
    with pytest.raises(ConfigError, match="--lr"):
        TrainConfig(lr=value)


def test_load_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.json"):
        load_config_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="list.json"):
        load_config_file(tmp_path / "list.json")


@pytest.mark.parametrize(
    "key, value",
    [
        ("image_size", 4096),
        ("batch_size", 65536),
        ("workers", 256),
        ("seed", 0),
        ("seed", 2**64 - 1),
        ("warmup", 0.0),
        ("warmup", 0.999),
        ("label_smoothing", 0.999),
    ],
)
def test_the_largest_values_in_range_are_taken(key, value):
    assert getattr(TrainConfig.from_dict({key: value}), key) == value


def test_the_seed_range_is_the_one_torch_takes():
    # what a seed is used for: torch's global seed (the init, dropout) and each epoch's generator
    top = SEED_RANGE[-1]
    torch.manual_seed(top)
    assert torch.initial_seed() == top == 2**64 - 1
    for epoch in (0, 1, 10**6):
        epoch_generator(top, epoch)  # seed * 1_000_003 + epoch is folded into 64 bits, not refused
    with pytest.raises((RuntimeError, ValueError)):
        torch.manual_seed(top + 1)  # one more and torch refuses it: the bound is torch's
    # seeds torch took before the fold give the same stream as before
    assert torch.equal(
        torch.randperm(50, generator=epoch_generator(7, 3)),
        torch.randperm(50, generator=torch.Generator().manual_seed(7 * 1_000_003 + 3)),
    )
