"""Adversarial attacks and defences (lecture 10, issue 24): white-box and transfer attacks, adversarial training.

On the embedded digits (16x16, the split of configs/classification.yaml) and, with ``--mnist DIR``, on MNIST IDX
files, for each seed:

1. Trains a zoo with plain PyTorch loops (the networks of the lectures, ``lecture_modules.nets``): the victim CNN
   [32, 64, 128] (the shipped digits CNN's architecture), held-out victims of other families (an MLP [256, 128] and
   a narrow CNN [16, 16, 32]), and proxies (a CNN [16, 32, 32] and an MLP [128]).
2. White box on the victim CNN: FGSM, I-FGSM, PGD-40, MI-FGSM, DI2-FGSM at each L-inf eps; PGD-L2 and C&W at an
   L2 budget.
3. Transfer: FGSM, I-FGSM, MI-FGSM and DI2-FGSM crafted on one proxy and on the logit ensemble of both, at the
   transfer eps, scored on every victim.
4. Adversarial training at the AT eps and a fixed epoch budget: PGD-7 (Madry et al.) and FGSM with random start
   (Wong et al.), clean accuracy and PGD-40 robust accuracy.
5. Speed: PGD-40 images per second on the victim CNN.

``--throughput`` instead times PGD-40 (L-inf, random start) side by side, ours and torchattacks 3.5.1 on the same
victim CNN, batch and standardisation, alternating the two within each repetition; it prints the medians after
warm-up, the ratio ours / torchattacks, and how far the two adversarial batches (same seed) agree.

Budgets are [0, 1] pixel units through the data's standardisation. Prints a markdown table (mean ± std over seeds)
and writes it to ``--out``.

    .venv/bin/python benchmarks/adversarial.py --seeds 0                     # digits, 1 seed
    .venv/bin/python benchmarks/adversarial.py --mnist ../shared/data/mnist  # + MNIST, 3 seeds
    .venv/bin/python benchmarks/adversarial.py --throughput --batch 64 --reps 7  # ours vs torchattacks, digits
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs

from datamodules.image import ImageDataModule
from datamodules.sources import IDXSource
from lecture_modules.adversarial import core
from lecture_modules.nets import NetSpec

ZOO = {
    "victim_cnn": NetSpec(kind="cnn", widths=[32, 64, 128]),
    "mlp": NetSpec(kind="mlp", widths=[256, 128]),
    "narrow_cnn": NetSpec(kind="cnn", widths=[16, 16, 32]),
    "proxy_cnn": NetSpec(kind="cnn", widths=[16, 32, 32]),
    "proxy_mlp": NetSpec(kind="mlp", widths=[128]),
}
VICTIMS, PROXIES = ["victim_cnn", "mlp", "narrow_cnn"], ["proxy_cnn", "proxy_mlp"]
SETTINGS = {  # per data set: L-inf budgets, L2 budget, transfer eps, AT eps, epochs (zoo, AT), test images
    "digits": {"eps": [0.05, 0.1], "l2": 1.0, "transfer": 0.05, "at": 0.1, "epochs": 15, "at_epochs": 10, "n": 200},
    "mnist": {"eps": [0.1, 0.3], "l2": 2.0, "transfer": 0.1, "at": 0.3, "epochs": 3, "at_epochs": 3, "n": 1000},
}
REFERENCE = (
    "Madry et al. 2018 (MNIST, eps 0.3): standard CNN near 0% under PGD; PGD-AT about 89% against their strongest "
    "white-box attack. HW10 reproductions (CIFAR-10, one proxy): 62.7 -> 49.2 -> 34.1 -> 25.9% victim accuracy for "
    "FGSM -> I-FGSM -> MI -> DIM, 5.7% from a 6-model ensemble; Kurakin et al. 2017: iterative attacks may transfer "
    "worse than FGSM."
)


def data_for(name: str, root: str | None, seed: int) -> tuple[ImageDataModule, core.Normalize]:
    source = IDXSource(root) if name == "mnist" else None
    data = ImageDataModule(source=source, image_size=16 if name == "digits" else None, batch_size=64, seed=0)
    data.setup("fit")
    torch.manual_seed(seed)
    mean, std = data.pixel_stats
    return data, core.Normalize(mean.flatten(), std.flatten())


def train(spec: NetSpec, data, normalize, epochs: int, attack: str | None = None, eps: float = 0.0):
    """Adam 3e-3 with cosine decay; ``attack``: ``pgd`` (PGD-7, Madry) or ``fgsm_rs`` (Wong et al.) training."""
    x_train, y_train = data.train_dataloader().dataset.tensors
    net = spec.build(tuple(x_train.shape[1:]), 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    steps = epochs * ((len(y_train) + 63) // 64)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_train)).split(64):
            x, y = x_train[idx], y_train[idx]
            if attack is not None:
                x01 = normalize.inverse(x)
                k, alpha = (7, 2.5 * eps / 7) if attack == "pgd" else (1, 1.25 * eps)
                x = normalize(core.pgd(net, x01, y, eps=eps, steps=k, alpha=alpha, normalize=normalize))
            net.train()
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
            scheduler.step()
    return net.eval()


def accuracy(net, normalize, x01: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(normalize(x01)).argmax(1) == y).float().mean().item()


def white_box(net, normalize, x01, y, setting) -> dict[str, float]:
    out = {"clean": accuracy(net, normalize, x01, y)}
    gen = torch.Generator().manual_seed(0)
    for eps in setting["eps"]:
        attacks = {
            "FGSM": core.fgsm(net, x01, y, eps=eps, normalize=normalize),
            "I-FGSM (10)": core.ifgsm(net, x01, y, eps=eps, steps=10, normalize=normalize),
            "PGD-40": core.pgd(net, x01, y, eps=eps, steps=40, alpha=eps / 10, normalize=normalize, generator=gen),
            "MI-FGSM (10)": core.mifgsm(net, x01, y, eps=eps, steps=10, normalize=normalize),
            "DI2-FGSM (10)": core.difgsm(net, x01, y, eps=eps, steps=10, normalize=normalize, generator=gen),
        }
        out.update({f"{k} eps {eps:g}": accuracy(net, normalize, v, y) for k, v in attacks.items()})
    l2 = setting["l2"]
    out[f"PGD-L2-40 eps {l2:g}"] = accuracy(
        net, normalize, core.pgd(net, x01, y, eps=l2, steps=40, norm="l2", normalize=normalize, generator=gen), y
    )
    cw = core.carlini_wagner_l2(net, x01, y, steps=50, search_steps=5, normalize=normalize)
    out[f"C&W L2 eps {l2:g}"] = accuracy(net, normalize, core.within_budget(x01, cw, l2, "l2"), y)
    return out


def transfer(zoo, normalize, x01, y, eps: float) -> dict[str, float]:
    out = {}
    gen = torch.Generator().manual_seed(0)
    sources = {"proxy_cnn": zoo["proxy_cnn"], "ensemble": core.Ensemble([zoo[p] for p in PROXIES])}
    for source, proxy in sources.items():
        for name, fn in (
            ("FGSM", core.fgsm),
            ("I-FGSM", core.ifgsm),
            ("MI-FGSM", core.mifgsm),
            ("DI2-FGSM", core.difgsm),
        ):
            kw = {"generator": gen} if fn is core.difgsm else {}
            x_adv = fn(proxy, x01, y, eps=eps, normalize=normalize, **kw)
            for victim in VICTIMS:
                out[f"{name} from {source} -> {victim}"] = accuracy(zoo[victim], normalize, x_adv, y)
    return out


def throughput(net, normalize, x01, y) -> float:
    start = time.perf_counter()
    core.pgd(net, x01, y, eps=0.1, steps=40, normalize=normalize)
    return len(y) / (time.perf_counter() - start)


def throughput_vs_torchattacks(batch: int, reps: int, warmup: int = 2, eps: float = 0.1) -> list[str]:
    """PGD-40 images/s, ours and torchattacks, on the digits victim CNN (3 epochs: speed does not depend on the
    weights), the same batch, eps, alpha = eps / 10 and standardisation; medians over ``reps`` after ``warmup``."""
    import torchattacks

    data, normalize = data_for("digits", None, 0)
    net = train(ZOO["victim_cnn"], data, normalize, epochs=3)
    x_test, y_test = data.test_dataloader().dataset.tensors
    x01, y = normalize.inverse(x_test[:batch]), y_test[:batch]
    mean, std = normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()
    attack = torchattacks.PGD(net, eps=eps, alpha=eps / 10, steps=40, random_start=True)
    attack.set_normalization_used(mean, std)  # takes and returns standardised images

    def ours(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return core.pgd(net, x01, y, eps=eps, steps=40, alpha=eps / 10, normalize=normalize, generator=gen)

    def theirs(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return normalize.inverse(attack(normalize(x01), y))

    times: dict[str, list[float]] = {"ours": [], "torchattacks": []}
    for rep in range(warmup + reps):
        for name, fn in (
            (("ours", ours), ("torchattacks", theirs)) if rep % 2 else (("torchattacks", theirs), ("ours", ours))
        ):
            start = time.perf_counter()
            fn(rep)
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    # Same seed, same start; but we carry delta and evaluate x + delta, torchattacks carries x_adv: float32
    # rounding differs by an ulp, which flips sign(g) where a gradient component is near zero (on a trained CNN
    # with max pooling a few pixels a batch), and those pixels then walk apart. Report how many, and the accuracy.
    x_ours, x_theirs = ours(0), theirs(0)
    differ = ((x_ours - x_theirs).abs() > 1e-5).float().mean().item()
    robust = {k: accuracy(net, normalize, v, y) for k, v in (("ours", x_ours), ("torchattacks", x_theirs))}
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    return [
        f"PGD-40 throughput, digits victim CNN {ZOO['victim_cnn'].widths}, batch {batch}, {reps} repetitions after "
        f"{warmup} warm-up (order alternating), torchattacks {torchattacks.__version__}",
        "",
        "| implementation | images/s (median) | min..max |",
        "|---|---:|---:|",
        *(f"| {k} | {rate[k]:.0f} | {batch / max(v):.0f}..{batch / min(v):.0f} |" for k, v in times.items()),
        "",
        f"ratio ours / torchattacks: {rate['ours'] / rate['torchattacks']:.2f}",
        f"same seed: {100 * differ:.2f}% of pixels differ by > 1e-5; robust accuracy at eps {eps:g}: ours "
        f"{100 * robust['ours']:.1f}%, torchattacks {100 * robust['torchattacks']:.1f}%",
    ]


def run(name: str, root: str | None, seed: int) -> dict[str, float]:
    setting = SETTINGS[name]
    data, normalize = data_for(name, root, seed)
    x_test, y_test = data.test_dataloader().dataset.tensors
    x01, y = normalize.inverse(x_test[: setting["n"]]), y_test[: setting["n"]]
    zoo = {k: train(spec, data, normalize, setting["epochs"]) for k, spec in ZOO.items()}
    row = {f"clean {k}": accuracy(net, normalize, x01, y) for k, net in zoo.items()}
    row.update({f"white box: {k}": v for k, v in white_box(zoo["victim_cnn"], normalize, x01, y, setting).items()})
    row.update(
        {
            f"transfer eps {setting['transfer']:g}: {k}": v
            for k, v in transfer(zoo, normalize, x01, y, setting["transfer"]).items()
        }
    )
    for attack in ("pgd", "fgsm_rs"):
        start = time.perf_counter()
        net = train(ZOO["victim_cnn"], data, normalize, setting["at_epochs"], attack=attack, eps=setting["at"])
        label = f"AT {attack} eps {setting['at']:g}, {setting['at_epochs']} epochs"
        row[f"{label}: clean"] = accuracy(net, normalize, x01, y)
        adv = core.pgd(net, x01, y, eps=setting["at"], steps=40, alpha=setting["at"] / 10, normalize=normalize)
        row[f"{label}: PGD-40"] = accuracy(net, normalize, adv, y)
        row[f"{label}: train seconds"] = time.perf_counter() - start
    row["PGD-40 images/s (victim CNN)"] = throughput(zoo["victim_cnn"], normalize, x01[:256], y[:256])
    return row


def fmt(values: list[float], key: str) -> str:
    scale = 1 if ("seconds" in key or "images/s" in key) else 100
    vals = [scale * v for v in values]
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.1f} ± {spread:.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", help="folder with MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--throughput", action="store_true", help="only PGD-40 speed, ours vs torchattacks")
    parser.add_argument("--batch", type=int, default=64, help="--throughput: images per batch")
    parser.add_argument("--reps", type=int, default=7, help="--throughput: timed repetitions")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/adversarial/results.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}; seeds {args.seeds}", ""]
    if args.throughput:
        lines[0] = f"machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}"
        print("\n".join(lines + throughput_vs_torchattacks(args.batch, args.reps)))
        return
    for name, root in [("digits", None)] + ([("mnist", args.mnist)] if args.mnist else []):
        rows = [run(name, root, seed) for seed in args.seeds]
        lines += [f"## {name}", "", "| measurement | % (or as named) |", "|---|---:|"]
        lines += [f"| {k} | {fmt([r[k] for r in rows], k)} |" for k in rows[0]]
        lines.append("")
    lines += ["Reference: " + REFERENCE, ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
