"""Does `--recipe paper` train, with the paper's own init and with the departure it takes?

Trains the recipe's network (alexnet2012, LRN, the paper's update rule at lr 0.01, batch 128,
momentum 0.9, weight decay 0.0005, flips and shifts) on a seeded subset of Fashion-MNIST at a small
input size, for each init and seed, and prints a table: the training loss of the last epoch and the
test accuracy (chance is 10%). Small on purpose (a 2-core CPU); see docs/paper.md for the numbers.

    python benchmarks/paper_init.py --train 4096 --test 2000 --epochs 2 --image-size 67 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from alexnet.config import TrainConfig
from alexnet.data.idx import TensorBatches, load_idx_dataset
from alexnet.data.transforms import Preprocess
from alexnet.formats import Totals
from alexnet.models import build_model
from alexnet.training import engine
from alexnet.training.optim import make_optimizer


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(data, init: str, seed: int, args) -> dict:
    cfg = TrainConfig.from_dict(
        {"recipe": "paper", "image_size": args.image_size, "init": init, "seed": seed, "lighting": False}
    )
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(data["train_images"]), generator=g)[: args.train]
    te = torch.arange(args.test)
    pixels = data["train_images"][tr].float().div(255)
    # --pixel-scale 255: the paper's input, pixel values 0-255 with the mean subtracted (std 1/255)
    std = 1 / 255 if args.pixel_scale == 255 else pixels.std().item()
    pre = Preprocess.for_tensors(
        mode="L", source_size=28, image_size=cfg.image_size, stats={"mean": [pixels.mean().item()], "std": [std]}
    )
    dev = torch.device("cpu")
    train = TensorBatches(
        data["train_images"][tr],
        data["train_labels"][tr],
        batch_size=cfg.batch_size,
        preprocess=pre,
        train=True,
        device=dev,
        seed=seed,
    )
    test = TensorBatches(
        data["test_images"][te], data["test_labels"][te], batch_size=256, preprocess=pre, train=False, device=dev
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes=10, in_channels=1, lrn=cfg.lrn, dropout=cfg.dropout, init=cfg.init)
    opt = make_optimizer(model, cfg)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        totals = Totals()
        for x, y in train:
            totals += engine.train_step(model, x, y, opt, device=dev).totals
    ev = engine.evaluate(model, test, 10, device=dev)
    return {
        "init": init,
        "seed": seed,
        "train_loss": totals.summed().loss_sum / totals.seen,
        "test_top1": ev["top1"],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=4096, help="training images (a seeded subset)")
    p.add_argument("--test", type=int, default=2000, help="test images (the first ones)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=67)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--inits", nargs="+", default=["paper", "caffe"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--pixel-scale",
        type=int,
        choices=(1, 255),
        default=1,
        help="1: normalized to std 1 (our default); 255: the paper's 0-255 minus the mean",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_idx_dataset()
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}; fp32")
    print(
        f"Fashion-MNIST: {args.train} training images (seeded subset), {args.test} test images; {args.epochs} "
        "epoch(s) at "
        f"{args.image_size}x{args.image_size}; pixel scale {args.pixel_scale}; recipe paper (alexnet2012, PaperSGD "
        "lr 0.01, batch 128, constant rate)"
    )
    print(f"{'init':<8} {'seed':>4} {'train loss':>11} {'test top-1':>11} {'seconds':>8}")
    rows = []
    for init in args.inits:
        for seed in args.seeds:
            r = run_one(data, init, seed, args)
            rows.append(r)
            print(
                (
                    f"{r['init']:<8} {r['seed']:>4} {r['train_loss']:>11.4f} {100 * r['test_top1']:>10.2f}% "
                    f"{r['seconds']:>8.0f}"
                ),
                flush=True,
            )
    for init in args.inits:
        accs = [100 * r["test_top1"] for r in rows if r["init"] == init]
        spread = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        print(
            f"{init:<8} median test top-1 {statistics.median(accs):.2f}% (spread {spread:.2f}, min "
            f"{min(accs):.2f}%, {len(accs)} seeds)"
        )


if __name__ == "__main__":
    main()
