"""runtime.py: the device choice (auto = CUDA, else MPS, else CPU; mocked where absent), the
precision choice, and the environment record."""

from __future__ import annotations

import json

import pytest
import torch

from alexnet.errors import ConfigError
from alexnet.system import runtime


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has CUDA and/or Apple's MPS: machine(cuda=..., mps=...)."""

    def pretend(*, cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
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
    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: True)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_bf16_units", lambda: False)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert runtime.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_bf16_units_need_a_cpu_flag(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: ["avx2", "avx512f"])
    assert runtime.cpu_has_bf16_units() is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for flag in ("amx_bf16", "avx512_bf16"):  # Intel's AMX tiles, AMD's (and Cooper Lake's) AVX512-BF16
        monkeypatch.setattr(runtime, "cpu_flags", lambda flag=flag: ["avx512f", flag])
        assert runtime.cpu_has_bf16_units() is True
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # oneDNN cannot use them
    assert runtime.cpu_has_bf16_units() is False


def test_environment_is_a_json_record_of_versions_and_hardware():
    env = runtime.environment(torch.device("cpu"), "fp32")
    assert json.loads(json.dumps(env)) == env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["precision"] == "fp32"
    assert env["gpu"] is None and env["threads"] == torch.get_num_threads() and env["cpu"]


# -- fast_path: each speed choice only where torch supports it (MPS mocked) --


@pytest.fixture
def macos(monkeypatch):
    """Pretend MPS runs on macOS of the given major version: macos(14)."""

    def pretend(major: int):
        monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda maj, minor: major >= maj, raising=False)

    return pretend


@pytest.mark.parametrize(
    ("asked", "major", "expected"),
    [("auto", 15, "fp32"), ("bf16", 14, "bf16"), ("bf16", 13, "fp32"), ("fp32", 15, "fp32")],
)
def test_mps_runs_bf16_only_on_macos_14_and_never_channels_last(macos, asked, major, expected):
    macos(major)
    fast = runtime.fast_path(torch.device("mps"), asked, channels_last=True)
    assert fast.precision == expected and fast.channels_last is False
    assert any("channels-last" in n for n in fast.notes)
    assert any("macOS 14" in n for n in fast.notes) == (asked == "bf16" and major < 14)


def test_cpu_and_cuda_keep_what_was_asked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.fast_path(torch.device("cuda"), "auto", True) == runtime.FastPath("bf16", True, True, ())
    assert runtime.fast_path(torch.device("cpu"), "fp32", False) == runtime.FastPath("fp32", False, True, ())


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_fused_sgd_is_chosen_exactly_where_torch_accepts_it(device):
    from torch.optim.optimizer import _device_dtype_check_for_fused

    fast = runtime.fast_path(torch.device(device), "fp32")
    try:
        _device_dtype_check_for_fused(torch.empty(1, device=device))
        accepted = True
    except RuntimeError:
        accepted = False
    assert fast.fused_sgd == accepted
    assert accepted or any("foreach" in n for n in fast.notes)


def test_the_foreach_fallback_updates_as_fused_sgd_does():
    from alexnet.config import TrainConfig
    from alexnet.training.optim import make_optimizer

    torch.manual_seed(0)
    models = [torch.nn.Linear(5, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(4, 5)
    for model, fused in zip(models, (True, False)):
        opt = make_optimizer(model, TrainConfig(), fused=fused)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)
