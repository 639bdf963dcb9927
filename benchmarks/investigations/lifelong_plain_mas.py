"""HW14's MAS procedure in plain PyTorch, no Lightning and no lecture code: how far its own runs spread.

HW14's MAS figure (95.1%) is the last epoch of one run of its 2021 sample notebook. To know whether our MAS
(``benchmarks/lifelong.py``) matches it, we need the spread of that procedure over seeds, which one run cannot
give. This script is a from-scratch loop that follows the notebook's procedure step by step, written here for
this comparison:

* 5 tasks of MNIST (all 60,000 training images each), task 1 unpermuted and tasks 2-5 with pixel permutations
  from ``numpy.random.seed(seed)``; inputs standardised with mean 0.1307, std 0.3081.
* the 784-1024-512-256-10 ReLU MLP with PyTorch's default initialisation; Adam with lr 1e-4, a new one per task;
  batches of 128, reshuffled every epoch; 10 epochs per task.
* loss: cross-entropy + ``lambda * sum_i Omega_i (theta_i - theta*_i)^2`` with lambda 0.1 (``--penalty-weight 0``:
  fine-tuning), anchored at the weights where the previous task ended.
* after each task, ``Omega`` is re-estimated at the current weights on the test images of every task seen so far,
  shuffled, in batches of 8,192: the mean over all those batches of ``|d mean_batch ||f(x)||^2 / d theta|``
  (``--importance-images train``: on 10,000 training images per task instead, as ``benchmarks/lifelong.py`` does;
  ``--importance-batches fixed``: the same seeded batches at every estimate, as ``benchmarks/lifelong.py`` does).
* after every epoch, the test accuracy of every task (all 10,000 images); the curve is their mean over the tasks
  seen so far, the quantity the notebook prints.

``--draws ours`` replays, instead of HW14's random draws, those of a ``benchmarks/lifelong.py`` run with the same
seed (MAS with HW14's protocol: ``benchmarks/investigations/lifelong_hw14.py``): its data (our
``TaskStreamDataModule``'s permuted, standardised tensors, task 1 permuted too), its per-epoch batch order
(``ResumableSampler``) and its importance samples (10,000 seeded training images per seen task, ``shard_batches``);
the initial weights are the same in both modes. The training loop stays
this script's own. If the replay lands on our runs' numbers, the gap between the two procedures lies in the
draws; if it lands on HW14's, it lies in the training loop.

It writes a results file in the schema of ``benchmarks/lifelong.py`` (``args``, ``runs`` with ``matrix`` and
``curves``), which ``benchmarks/investigations/lifelong_vs_hw14.py --plain`` reads.

Run: ``.venv/bin/python benchmarks/investigations/lifelong_plain_mas.py --mnist ../shared/data/mnist --results r.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: lifelong.py, machine.py, runner.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/machine.py

from benchmarks.investigations.mnist_test_halves import hw14_mlp, standardise
from datamodules.sources import IDXSource
from lecture_modules.lifelong.metrics import summary


def output_sensitivity(net: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per parameter, the mean over ``batches`` of ``|d mean_(x in batch) ||net(x)||^2 / d theta|``."""
    omega = [torch.zeros_like(p) for p in net.parameters()]
    for x in batches:
        net.zero_grad()
        net(x).pow(2).sum(1).mean().backward()
        for o, p in zip(omega, net.parameters()):
            o += p.grad.abs() / len(batches)
    net.zero_grad()
    return omega


def accuracies(net: nn.Module, tests: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    with torch.no_grad():
        return [(net(x).argmax(1) == y).float().mean().item() for x, y in tests]


def our_draws(seed: int, args):
    """The tasks, batch orders and importance batches of ``benchmarks/lifelong.py``'s run of ``seed``."""
    from datamodules.image import ImageDataModule
    from datamodules.samplers import ResumableSampler
    from datamodules.streams import TaskStreamDataModule

    base = ImageDataModule(IDXSource(args.mnist), batch_size=128, eval_batch_size=1000, val_fraction=0, seed=seed)
    stream = TaskStreamDataModule(base, "permuted", args.num_tasks, args.epochs_per_task, eval_split="test", seed=seed)
    trains = [tuple(stream.task_data(t, "train").tensors[:2]) for t in range(args.num_tasks)]
    tests = [tuple(stream.task_data(t, "test").tensors[:2]) for t in range(args.num_tasks)]
    trains, tests = ([(x.flatten(1), y) for x, y in part] for part in (trains, tests))

    def order(epoch: int) -> torch.Tensor:
        sampler = ResumableSampler(len(trains[0][1]), seed=seed)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler))

    def importance_batches(task: int) -> list[torch.Tensor]:
        return [x.flatten(1) for k in range(task + 1) for x, _, _ in stream.shard_batches(k, 10_000, 8192)]

    return trains, tests, order, importance_batches


def hw14_draws(seed: int, args, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]):
    """HW14's tasks (task 1 unpermuted, numpy permutations), fresh batch orders and importance batches."""
    np.random.seed(seed)
    perms = [torch.arange(784)] + [torch.from_numpy(np.random.permutation(784)) for _ in range(args.num_tasks - 1)]
    trains = [(train[0][:, p], train[1]) for p in perms]
    tests = [(test[0][:, p], test[1]) for p in perms]

    def importance_batches(task: int) -> list[torch.Tensor]:
        source = tests if args.importance_images == "test" else trains
        batches = []
        for k, (images, _) in enumerate(source[: task + 1]):
            # HW14 reshuffles a seen task's test images at every estimate; "fixed": the same split every time, as
            # benchmarks/lifelong.py's seeded subset does
            g = torch.Generator().manual_seed(seed * 7919 + k) if args.importance_batches == "fixed" else None
            order = torch.randperm(len(images), generator=g)[:10_000]
            batches += [images[i] for i in order.split(8192)]
        return batches

    return trains, tests, lambda epoch: torch.randperm(len(train[1])), importance_batches


def run(seed: int, args, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    if args.draws == "ours":
        trains, tests, order, importance_batches = our_draws(seed, args)
    else:
        trains, tests, order, importance_batches = hw14_draws(seed, args, train, test)
    torch.manual_seed(seed)  # the initial weights of benchmarks/lifelong.py's run of this seed, too
    net = hw14_mlp()
    omega: list[torch.Tensor] | None = None
    anchor: list[torch.Tensor] | None = None
    matrix, curves = [], []
    for task, (x, y) in enumerate(trains):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        for epoch in range(task * args.epochs_per_task, (task + 1) * args.epochs_per_task):
            for idx in order(epoch).split(128):
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                if omega is not None and args.penalty_weight:
                    drift = sum(((p - a).pow(2) * o).sum() for p, a, o in zip(net.parameters(), anchor, omega))
                    loss = loss + args.penalty_weight * drift
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            curves.append(accuracies(net, tests))
        matrix.append(curves[-1])
        omega = output_sensitivity(net, importance_batches(task))
        anchor = [p.detach().clone() for p in net.parameters()]
    return {"method": "mas" if args.penalty_weight else "finetune", "seed": seed, "matrix": matrix, "curves": curves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", required=True, help="folder with MNIST's four IDX files (gzipped or not)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--penalty-weight", type=float, default=0.1, help="HW14's MAS lambda; 0: fine-tuning")
    parser.add_argument("--importance-images", choices=["test", "train"], default="test", help="test: HW14's")
    parser.add_argument(
        "--importance-batches",
        choices=["reshuffled", "fixed"],
        default="reshuffled",
        help="reshuffled: new batches at every estimate (HW14's); fixed: the same seeded batches every time",
    )
    parser.add_argument(
        "--draws",
        choices=["hw14", "ours"],
        default="hw14",
        help="hw14: HW14's random draws; ours: replay benchmarks/lifelong.py's draws for the seed (data, batch order, "
        "importance samples), a diagnostic that takes neither --importance-images nor --importance-batches",
    )
    parser.add_argument("--epochs-per-task", type=int, default=10, help="HW14: 10")
    parser.add_argument("--num-tasks", type=int, default=5, help="HW14: 5")
    parser.add_argument("--results", required=True, help=".json file for the runs")
    args = parser.parse_args()
    if args.draws == "ours" and (args.importance_images, args.importance_batches) != ("test", "reshuffled"):
        parser.error("--draws ours replays our run's importance samples: drop --importance-images/--importance-batches")
    torch.set_num_threads(1)
    splits = IDXSource(root=args.mnist).load().splits
    train = standardise(splits["train"][0]), splits["train"][1]
    test = standardise(splits["test"][0]), splits["test"][1]
    runs = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = run(seed, args, train, test)
        result.update(summary(result["matrix"], None), seconds=time.perf_counter() - start)
        runs.append(result)
        print(f"seed {seed}: final average accuracy {100 * result['cl/avg_acc']:.2f}%, "
              f"BWT {100 * result['cl/bwt']:.2f} ({result['seconds']:.0f} s)", flush=True)  # fmt: skip
    out = {"args": vars(args), "machine": f"{cpu_name()}, torch {torch.__version__}, 1 thread", "runs": runs}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
