"""How much the part of the MNIST test set that is scored moves the accuracy of HW14's MLP.

MNIST's test set mixes digits from two NIST collections written by different people (Census Bureau employees and
high-school students; see Yadav & Bottou 2019, arXiv 1905.10498), so its parts need not be equally hard. This
script trains HW14's task 1 without any framework in the way (unpermuted MNIST, the 784-1024-512-256-10 ReLU MLP
with PyTorch's default initialisation, inputs standardised with mean 0.1307 and std 0.3081, Adam lr 1e-4, batch 128,
``--epochs`` epochs) and prints, after every epoch, the accuracy on the first 2,000 test images, on each half, and
on all 10,000 (HW14's sample code scores all 10,000).

It exists because ``benchmarks/lifelong.py --eval-images 2000`` scores the first 2,000: the README's comparison with
HW14's figures has to know how far that subset sits from the whole test set.

Run: ``.venv/bin/python benchmarks/investigations/mnist_test_halves.py --mnist ../shared/data/mnist``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: lifelong.py, machine.py, runner.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/machine.py

from datamodules.sources import IDXSource


def standardise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float (N, 784), HW14's normalisation."""
    return ((images.float() / 255.0 - 0.1307) / 0.3081).flatten(1)


def hw14_mlp() -> nn.Sequential:
    """HW14's 784-1024-512-256-10 ReLU MLP with PyTorch's default initialisation."""
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", required=True, help="folder with MNIST's four IDX files (gzipped or not)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=10, help="HW14: 10 per task")
    parser.add_argument("--results", default="runs/bench/mnist_test_halves.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = IDXSource(root=args.mnist).load().splits
    x_train, y_train = standardise(splits["train"][0]), splits["train"][1]
    x_test, y_test = standardise(splits["test"][0]), splits["test"][1]
    parts = {"first 2000": slice(0, 2000), "first 5000": slice(0, 5000), "last 5000": slice(5000, None)}
    lines = [
        f"machine: {cpu_name()}, torch {torch.__version__}, 1 thread",
        f"HW14 task 1 (unpermuted MNIST, 60000 training images, {args.epochs} epochs); test accuracy (%) by part",
        "",
        "| seed | epoch | " + " | ".join(parts) + " | all 10000 |",
        "|---|---|" + "---|" * (len(parts) + 1),
    ]
    for seed in args.seeds:
        torch.manual_seed(seed)
        net = hw14_mlp()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            net.train()
            for idx in torch.randperm(len(x_train)).split(128):
                loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                correct = (net(x_test).argmax(1) == y_test).float()
            cells = [f"{100 * correct[part].mean():.2f}" for part in parts.values()]
            lines.append(f"| {seed} | {epoch} | " + " | ".join(cells) + f" | {100 * correct.mean():.2f} |")
            print(lines[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    print(f"\n{args.results}")


if __name__ == "__main__":
    main()
