"""runtime.py: the device choice (auto = CUDA, else MPS, else CPU; mocked where absent), the
precision choice, and the environment record."""

from __future__ import annotations

import json

import pytest
import torch

from alexnet import runtime
from alexnet.errors import ConfigError


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has CUDA and/or Apple's MPS: machine(cuda=..., mps=...)."""

    def pretend(*, cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert runtime.resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize(("name", "flag"), [("cuda", "CUDA"), ("cuda:1", "CUDA"), ("mps", "MPS")])
def test_a_missing_device_is_one_line_naming_it(machine, name, flag):
    machine(cuda=False, mps=False)
    with pytest.raises(ConfigError, match=rf"--device {name}: .*{flag}.*use --device cpu") as e:
        runtime.resolve_device(name)
    assert "\n" not in str(e.value)


def test_a_device_that_is_no_device_is_refused():
    with pytest.raises(ConfigError, match="--device 'gpu0' is not a device"):
        runtime.resolve_device("gpu0")


def test_precision_auto_follows_the_hardware(monkeypatch):
    assert runtime.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: False)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert runtime.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_amx_needs_the_cpu_flag(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: ["avx512f"])
    assert runtime.cpu_has_amx() is False


def test_environment_is_a_json_record_of_versions_and_hardware():
    env = runtime.environment(torch.device("cpu"), "fp32")
    assert json.loads(json.dumps(env)) == env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["precision"] == "fp32"
    assert env["gpu"] is None and env["threads"] == torch.get_num_threads() and env["cpu"]
