"""The paper's model parallelism: ``alexnet2012``'s two towers, each on its own device.

Section 3.2 and figure 2 of the paper: "half of the kernels (or neurons) on each GPU, with one
additional trick: the GPUs communicate only in certain layers". Here tower ``t`` owns output
channels (or neurons) ``[t*C/2, (t+1)*C/2)`` of every layer, with its own parameters on its own
device, and the towers exchange activations only where the one-device ``alexnet2012`` has a layer
that reads all channels:

* conv1 reads the image, which both devices get whole;
* conv2, conv4 and conv5 (``groups=2``) read only their own tower's maps: nothing is exchanged;
* conv3 reads both towers' pool2 maps, FC6 both towers' pool5, FC7 both halves of FC6, FC8 both
  halves of FC7 (each tower computes half of every FC layer's outputs: 2048 + 2048 for FC6 and
  FC7, as in cuda-convnet's two-GPU layer files); the logits come back on the first device.
* Local response normalization (after conv1 and conv2) sums the squares of 5 adjacent maps
  across channels; a tower's border maps have neighbours in the other tower, so each tower borrows
  the 2 border maps it needs from the other to compute exactly what the one-device network does.

:class:`TwoTowers` holds one parameter set per device (no weights are sliced or copied during a
step) and presents the one-device network's state_dict: the same keys and shapes, each tensor the
towers' halves concatenated; ``load_state_dict`` takes such a state_dict and splits it. A
checkpoint therefore moves freely between the two, and ``alexnet evaluate`` / ``predict`` load a
two-tower run's checkpoint into the plain one-device ``alexnet2012``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from alexnet.models import AlexNet

TOWERS = 2


def _shares(n: int) -> list[int]:
    """How many of a layer's ``n`` outputs each tower owns: halves (FC8 of an odd class count: one more in tower 0)."""
    return [n - n // TOWERS, n // TOWERS]


def _tower_layer(layer: nn.Module, tower: int) -> nn.Module:
    """Tower ``tower``'s part of one layer of the one-device network, built on the meta device
    (no memory, no init: :class:`TwoTowers` loads the weights). A ``groups=2`` convolution
    becomes an ordinary one over the tower's own maps."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups not in (1, TOWERS):
            raise ValueError(f"a convolution of {layer.groups} groups does not split into {TOWERS} towers")
        in_channels = layer.in_channels // layer.groups  # groups=1 reads all maps; groups=2 its tower's own
        out = _shares(layer.out_channels)[tower]
        return nn.Conv2d(in_channels, out, layer.kernel_size, layer.stride, layer.padding, device="meta")
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, _shares(layer.out_features)[tower], device="meta")
    return copy.deepcopy(layer)  # activations, LRN, pooling, dropout: no weights


def _reads_all(layer: nn.Module) -> bool:
    """Whether a layer reads every channel of its input (so the towers exchange before it)."""
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)


class _Tower(nn.Module):
    """One tower: its halves of ``features`` and ``classifier`` under the one-device indices, so
    its parameter names are the one-device network's (``features.0.weight``, ...)."""

    def __init__(self, model: AlexNet, tower: int):
        super().__init__()
        self.features = nn.Sequential(*(_tower_layer(m, tower) for m in model.features))
        self.avgpool = copy.deepcopy(model.avgpool)
        self.classifier = nn.Sequential(*(_tower_layer(m, tower) for m in model.classifier))


class TwoTowers(nn.Module):
    """``model`` (an ``alexnet2012`` built by :func:`~alexnet.models.build_model`) split into two
    towers on ``devices``, with ``model``'s weights. Called like the one-device network: images on
    any device in, logits on ``devices[0]`` out."""

    def __init__(
        self, model: AlexNet, devices: tuple[torch.device | str, torch.device | str], *, channels_last: bool = False
    ):
        super().__init__()
        self.devices = tuple(torch.device(d) for d in devices)
        self.min_size = model.min_size
        self.towers = nn.ModuleList(_Tower(model, t) for t in range(TOWERS))
        fmt = torch.channels_last if channels_last else torch.preserve_format
        for tower, device in zip(self.towers, self.devices):
            tower.to_empty(device=device).to(memory_format=fmt)
        # the one-device names, in the one-device order: what state_dict gives and load_state_dict takes
        self._names = [name for name, _ in self.towers[0].named_parameters()]
        self.register_state_dict_post_hook(_one_device_state)
        self.register_load_state_dict_pre_hook(_split_state)
        self.load_state_dict(model.state_dict())
        # conv1 reads the whole image, which each device is given: no exchange before it
        first_conv = next(i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d))
        self._feature_steps = [_step(m, i == first_conv) for i, m in enumerate(model.features)]
        self._classifier_steps = [_step(m, False) for m in model.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gather(self._classify(self._pooled(x), self._classifier_steps))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """FC7's output after its activation, on ``devices[0]``, as :meth:`AlexNet.embed` gives it."""
        return self._gather(self._classify(self._pooled(x), self._classifier_steps[:-1]))

    def check_input_size(self, height: int, width: int) -> None:
        """Refuse an input below :attr:`min_size`, as :meth:`AlexNet.check_input_size` does."""
        AlexNet.check_input_size(self, height, width)

    def _pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each tower's pool5, flattened: [(N, 128*6*6) on devices[0], (N, 128*6*6) on devices[1]]."""
        self.check_input_size(*x.shape[-2:])
        hs = [x.to(d, non_blocking=True) for d in self.devices]  # the whole image on both devices
        for i, step in enumerate(self._feature_steps):
            layers = [tower.features[i] for tower in self.towers]
            if step == "lrn":
                hs = _lrn_borrowing(layers, hs)
                continue
            if step == "exchange":
                hs = self._exchange(hs)
            hs = [layer(h) for layer, h in zip(layers, hs)]
        # (N, 128, 6, 6) per tower -> (N, 4608): tower 0's channels first, as the one-device flatten
        return [torch.flatten(tower.avgpool(h), 1) for tower, h in zip(self.towers, hs)]

    def _classify(self, hs: list[torch.Tensor], steps: list[str]) -> list[torch.Tensor]:
        for i, step in enumerate(steps):
            if step == "exchange":  # FC6, FC7, FC8 read both towers' outputs
                hs = self._exchange(hs)
            hs = [tower.classifier[i](h) for tower, h in zip(self.towers, hs)]
        return hs

    def _exchange(self, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Both towers' maps (or neurons) on each device, tower 0's first: (N, C/2, ...) x 2 -> (N, C, ...) x 2."""
        return [torch.cat([h.to(d, non_blocking=True) for h in hs], 1) for d in self.devices]

    def _gather(self, hs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([h.to(self.devices[0], non_blocking=True) for h in hs], 1)


def _step(layer: nn.Module, first_conv: bool) -> str:
    """How the forward pass treats a layer: ``exchange`` before it, borrow border maps at ``lrn``,
    or run it on the tower's ``own`` input."""
    if isinstance(layer, nn.LocalResponseNorm):
        return "lrn"
    return "exchange" if _reads_all(layer) and not first_conv else "own"


def _lrn_borrowing(layers: list[nn.LocalResponseNorm], hs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Local response normalization across both towers' maps, each computing its own.

    nn.LocalResponseNorm(5) normalizes map c by the squares of maps c-2 .. c+2 (``size // 2``
    below, ``(size - 1) // 2`` above; zeros past the ends). Tower 0's last maps need the first 2 of
    tower 1, tower 1's first maps the last 2 of tower 0: each tower borrows those, normalizes, and
    keeps its own maps - the same numbers the one-device layer computes over all 96 (or 256).
    """
    size = layers[0].size
    below, above = size // 2, (size - 1) // 2
    lo, hi = hs
    n = lo.shape[1]
    lo_out = layers[0](torch.cat([lo, hi[:, :above].to(lo.device, non_blocking=True)], 1))[:, :n]
    hi_out = layers[1](torch.cat([lo[:, n - below :].to(hi.device, non_blocking=True), hi], 1))[:, below:]
    return [lo_out, hi_out]


def _one_device_state(module: TwoTowers, state: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the towers' halves of each parameter replaced by their concatenation
    under the one-device key, in the one-device order (on the first tower's device)."""
    with torch.no_grad():
        for name in module._names:
            halves = [state.pop(f"{prefix}towers.{t}.{name}") for t in range(TOWERS)]
            state[prefix + name] = torch.cat([h.to(halves[0].device) for h in halves], 0)


def _split_state(
    module: TwoTowers,
    state: dict,
    prefix: str,
    local_metadata,
    strict: bool,
    missing: list,
    unexpected: list,
    errors: list,
) -> None:
    """load_state_dict pre-hook: each one-device tensor split into the towers' halves. A key that
    is absent is reported under its one-device name, as a size mismatch is; the towers' own keys
    are then filled with their current values so torch does not also list them."""
    for name in module._names:
        params = [tower.get_parameter(name) for tower in module.towers]
        keys = [f"{prefix}towers.{t}.{name}" for t in range(TOWERS)]
        value = state.pop(prefix + name, None)
        expected = torch.Size([sum(p.shape[0] for p in params), *params[0].shape[1:]])
        if value is None:
            missing.append(prefix + name)
        elif not isinstance(value, torch.Tensor):
            errors.append(
                f'While copying the parameter named "{prefix + name}", expected torch.Tensor from checkpoint but '
                f"received {type(value)}"
            )
        elif value.shape != expected:
            errors.append(
                f"size mismatch for {prefix + name}: copying a param with shape {value.shape} from checkpoint, the "
                f"shape in current model is {expected}."
            )
        else:
            for key, part in zip(keys, value.split([p.shape[0] for p in params], 0)):
                state[key] = part
            continue
        for key, p in zip(keys, params):
            state[key] = p.detach()
