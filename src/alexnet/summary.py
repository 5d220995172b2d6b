"""Per-layer shapes, parameters and multiply-accumulates of an AlexNet, paper-style.

The source document counts parameters as sum over layers of k^2 * c_in * c_out + c_out. Every row
here carries that formula, worked out from the shapes seen in a forward pass, beside the count of
the layer's actual parameters, so the two can be checked against each other (the tests do). The
formula covers FC layers too: FC6 reads a 256 x 6 x 6 map, so k = 6 and c_in = 256; FC7 and FC8
read vectors, so k = 1. Grouped convolutions (the paper's two towers) count per group.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BYTES_PER_VALUE = 4  # fp32 activations

_PARTS = ("features", "avgpool", "classifier")


def _leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules of features, avgpool and classifier with their state_dict prefixes."""
    return [
        (name, m)
        for part in _PARTS
        for name, m in getattr(model, part).named_modules(prefix=part)
        if not list(m.children())
    ]


def _trace(model: nn.Module, image_size: int, in_channels: int) -> list[tuple]:
    """Run one forward pass and return (prefix, module, input shape, output shape) in call order.

    The pass runs on the ``meta`` device (shapes only, no arithmetic, no memory) with the model's
    parameters swapped for meta tensors through ``functional_call``, so the caller's model is
    neither moved nor copied: AlexNet's 60 M weights would otherwise cost 240 MB.
    """
    calls = []
    hooks = [
        m.register_forward_hook(
            lambda m, inp, out, name=name: calls.append(
                (name, m, tuple(inp[0].shape[1:]), tuple(out.shape[1:]))  # drop the batch dim
            )
        )
        for name, m in _leaf_layers(model)
    ]
    meta_params = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
    meta_params.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()})
    x = torch.zeros(1, in_channels, image_size, image_size, device="meta")
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta_params, (x,))
    finally:
        for h in hooks:
            h.remove()
    return calls


def _row_name(module: nn.Module, counters: dict) -> str:
    """Paper-style name: conv1..conv5, fc6..fc8; ReLUs, LRNs, pools take the last layer's number."""
    if isinstance(module, nn.Conv2d):
        counters["layer"] += 1
        return f"conv{counters['layer']}"
    if isinstance(module, nn.Linear):
        counters["layer"] += 1  # after the AlexNets' five convolutions the paper's fc6, fc7, fc8
        return f"fc{counters['layer']}"
    if isinstance(module, nn.Dropout):
        # Numbered in order from 6: the paper drops the outputs of FC6 and FC7, the document's
        # code (and torchvision) the inputs of FC6 and FC7; either way there is one per FC layer.
        counters["dropout"] += 1
        return f"drop{counters['dropout'] + 5}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "avgpool"
    prefix = {nn.LocalResponseNorm: "lrn", nn.MaxPool2d: "pool"}.get(type(module))
    prefix = prefix or type(module).__name__.lower()  # relu, tanh
    return f"{prefix}{counters['layer']}"


def summarize(model: nn.Module, image_size: int, in_channels: int = 3) -> dict:
    """Per-layer output shape, parameters, MACs and activation memory for one square image.

    Returns ``{"image_size", "in_channels", "num_classes", "rows": [...], "totals": {...}}``.
    Each row has ``name`` (conv1, relu1, lrn1, pool1, ..., fc8), ``module`` (state_dict prefix),
    ``type``, ``shape`` ([C, H, W] or [F], per image), ``params`` (counted), ``params_formula``
    (k^2 * c_in * c_out + c_out from the traced shapes, per group for grouped convolutions),
    ``macs`` (multiply-accumulates per image, biases not counted) and ``activation_bytes`` (fp32
    output, per image). ``totals`` sums ``params``, ``params_formula``, ``macs`` and
    ``activation_bytes``; the activation total is the sum of every layer's output, an upper bound
    since in-place ReLUs share memory with their input.

    Raises:
        ValueError: if ``image_size`` is below the model's ``min_size``.
    """
    if hasattr(model, "check_input_size"):
        model.check_input_size(image_size, image_size)
    rows = []
    counters = {"layer": 0, "dropout": 0}
    last_map = None  # the last C x H x W map, which FC6 reads flattened
    for prefix, module, in_shape, out_shape in _trace(model, image_size, in_channels):
        formula = macs = 0
        if isinstance(module, nn.Conv2d):
            c_in, c_out, g = in_shape[0], out_shape[0], module.groups
            kk = module.kernel_size[0] * module.kernel_size[1]
            formula = g * (kk * (c_in // g) * (c_out // g)) + c_out
            macs = out_shape[1] * out_shape[2] * c_out * kk * c_in // g
        elif isinstance(module, nn.Linear):
            f_in, f_out = in_shape[0], out_shape[0]
            if last_map is not None and last_map[0] * last_map[1] * last_map[2] == f_in:
                c_in, kk = last_map[0], last_map[1] * last_map[2]  # FC6: the map, flattened
            else:
                c_in, kk = f_in, 1  # FC7, FC8: a vector is a 1 x 1 map
            formula = kk * c_in * f_out + f_out
            macs = f_in * f_out
            last_map = None
        if len(out_shape) == 3:
            last_map = out_shape
        rows.append(
            {
                "name": _row_name(module, counters),
                "module": prefix,
                "type": type(module).__name__,
                "shape": list(out_shape),
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "params_formula": formula,
                "macs": macs,
                "activation_bytes": math.prod(out_shape) * BYTES_PER_VALUE,
            }
        )
    keys = ("params", "params_formula", "macs", "activation_bytes")
    return {
        "image_size": image_size,
        "in_channels": in_channels,
        "num_classes": rows[-1]["shape"][0],
        "rows": rows,
        "totals": {k: sum(r[k] for r in rows) for k in keys},
    }


def _memory(n_bytes: int) -> str:
    if n_bytes >= 1024 * 1024:
        return f"{n_bytes / 1024 / 1024:,.2f} MiB"
    if n_bytes >= 1024:
        return f"{n_bytes / 1024:,.1f} KiB"
    return f"{n_bytes} B"  # e.g. FC8 with 10 classes: 40 B


def _cells(name: str, module: str, shape: str, counts: dict) -> tuple[str, ...]:
    return (
        name,
        module,
        shape,
        f"{counts['params']:,}",
        f"{counts['params_formula']:,}",
        f"{counts['macs']:,}",
        _memory(counts["activation_bytes"]),
    )


def format_table(summary: dict) -> str:
    """An aligned text table of :func:`summarize`'s rows with a totals row, numbers with commas."""
    header = (
        "layer",
        "module",
        "output C×H×W",
        "params",
        "params (formula)",
        "MACs",
        "activation memory",
    )
    rows = [_cells(r["name"], r["module"], "×".join(map(str, r["shape"])), r) for r in summary["rows"]]
    total = _cells("total", "", "", summary["totals"])
    widths = [max(len(row[i]) for row in [header, *rows, total]) for i in range(len(header))]

    def fmt(cells):
        # text columns left-aligned, number columns right-aligned
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    size = summary["image_size"]
    title = f"input {summary['in_channels']}×{size}×{size}, {summary['num_classes']} classes"
    title += ", per image, fp32"
    rule = "-" * len(fmt(header))
    return "\n".join([title, fmt(header), rule, *map(fmt, rows), rule, fmt(total)])
