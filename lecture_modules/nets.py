"""Networks shared by the lectures, and the one typed argument that describes them.

A lecture takes its network as *one* argument, a :class:`NetSpec` (``model.init_args.net`` in a config), instead of
repeating ``backbone``/``hidden``/``batch_norm``/``dropout`` in every method. The spec is stored in the
hyper-parameters as a plain dict (:meth:`NetSpec.as_dict`), so checkpoints still load with ``weights_only=True``.

* :func:`build_mlp`: Flatten -> [Linear -> BN -> ReLU -> Dropout] per width -> Linear.
* :func:`build_cnn`: [Conv3x3 -> BN -> ReLU -> Dropout2d -> MaxPool2 while the map is >= 4 px] per width -> GAP ->
  Linear.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from datamodules.errors import SettingError
from lecture_modules.base import bad_setting, model_setting

__all__ = ["DEFAULT_WIDTHS", "NetSpec", "Spec", "build_cnn", "build_mlp", "fold_legacy_net_args", "measure_latency"]

DEFAULT_WIDTHS = {"mlp": [256, 128], "cnn": [32, 64, 128]}


def _block(layer: nn.Module, width: int, batch_norm: bool, dropout: float, dims: int) -> list[nn.Module]:
    norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(width) if batch_norm else nn.Identity()
    drop = (nn.Dropout if dims == 1 else nn.Dropout2d)(dropout) if dropout > 0 else nn.Identity()
    return [layer, norm, nn.ReLU(inplace=True), drop]


def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden: list[int], batch_norm: bool, dropout: float
) -> nn.Sequential:
    """Flatten -> [Linear -> BN -> ReLU -> Dropout] * len(hidden) -> Linear."""
    layers: list[nn.Module] = [nn.Flatten()]  # (B, C*H*W)
    width = int(torch.tensor(input_shape).prod())
    for h in hidden:
        layers += _block(nn.Linear(width, h, bias=not batch_norm), h, batch_norm, dropout, dims=1)
        width = h
    layers.append(nn.Linear(width, num_classes))  # (B, num_classes)
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: list[int], batch_norm: bool, dropout: float
) -> nn.Sequential:
    """[Conv3x3 -> BN -> ReLU -> Dropout2d -> MaxPool2 (while the map is >= 4 px)] per width -> GAP -> Linear."""
    in_ch, size = input_shape[0], min(input_shape[1:])
    layers: list[nn.Module] = []
    for out_ch in channels:
        layers += _block(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm), out_ch, batch_norm, dropout, dims=2
        )  # (B, out_ch, H, W)
        if size >= 4:
            layers.append(nn.MaxPool2d(2))  # (B, out_ch, H/2, W/2)
            size //= 2
        in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]  # (B, num_classes)
    return nn.Sequential(*layers)


SpecT = TypeVar("SpecT", bound="Spec")


@dataclass(frozen=True)
class Spec:
    """Shared behaviour of the lectures' network specs (frozen dataclasses deriving from this class): built from a
    spec or the plain dict a checkpoint holds, validated with errors that name the setting, stored as a plain dict.
    It is itself a (field-less) dataclass: jsonargparse expands a spec into ``--model.net.<field>`` options only when
    every class it derives from is one."""

    @classmethod
    def of(cls: type[SpecT], value: Spec | Mapping[str, Any], owner: str = "net") -> SpecT:
        """A validated spec from a spec or the plain dict a checkpoint holds; ``owner`` names the setting in errors
        (``net`` or ``student``: ``model.init_args.net`` in the message)."""
        allowed = [f.name for f in fields(cls)]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                raise SettingError(f"{model_setting(owner)}: unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
            spec = cls(**value)
        elif isinstance(value, cls):
            spec = cls(**value.as_dict())
        else:
            raise TypeError(f"{model_setting(owner)} must be a {cls.__name__} or a mapping, got {type(value).__name__}")
        spec.validate(owner)
        return spec

    def validate(self, owner: str = "net") -> None:
        """Raise :class:`~datamodules.errors.SettingError` naming the setting (``model.init_args.<owner>.<field>``)
        when a field is out of range."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the hyper-parameters (checkpoints stay ``weights_only``)."""
        return asdict(self)


@dataclass(frozen=True)
class NetSpec(Spec):
    """An image classifier: an MLP or a small CNN.

    Attributes:
        kind: ``mlp`` (fully connected) or ``cnn`` (3x3 convolutions with pooling).
        widths: hidden units per layer (MLP) or channels per convolution (CNN); null takes the kind's default
            ([256, 128] for the MLP, [32, 64, 128] for the CNN).
        batch_norm: batch normalisation after each hidden layer.
        dropout: dropout probability after each hidden layer, in [0, 1) (0 disables it).
    """

    kind: Literal["mlp", "cnn"] = "cnn"
    widths: list[int] | None = None
    batch_norm: bool = True
    dropout: float = 0.0

    def validate(self, owner: str = "net") -> None:
        """Raise :class:`~datamodules.errors.SettingError` naming the setting (``model.init_args.net.kind`` ...)
        when a field is out of range."""
        if self.kind not in ("mlp", "cnn"):
            raise bad_setting(f"{owner}.kind", self.kind, "'mlp' or 'cnn'")
        if self.widths is not None and (not self.widths or min(self.widths) < 1):
            raise bad_setting(f"{owner}.widths", self.widths, "a list of positive widths (or null: the default)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_setting(f"{owner}.dropout", self.dropout, "in [0, 1)")

    @property
    def layer_widths(self) -> list[int]:
        """``widths``, or the kind's default."""
        return list(self.widths) if self.widths is not None else list(DEFAULT_WIDTHS[self.kind])

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
        """The network: (B, C, H, W) -> (B, num_classes)."""
        build = build_mlp if self.kind == "mlp" else build_cnn
        return build(tuple(input_shape), num_classes, self.layer_widths, self.batch_norm, self.dropout)


def fold_legacy_net_args(hparams: Mapping[str, Any], kind_key: str = "backbone", widths_key: str = "hidden") -> dict:
    """Hyper-parameters of a checkpoint written before the network became one ``net`` argument, with the old
    ``backbone``/``hidden``/``batch_norm``/``dropout`` entries folded into ``net`` (others are left as they are)."""
    out = dict(hparams)
    if "net" in out or kind_key not in out:
        return out
    net = {"kind": out.pop(kind_key), "widths": out.pop(widths_key, None)}
    for key in ("batch_norm", "dropout"):
        if key in out:
            net[key] = out.pop(key)
    out["net"] = net
    return out


def measure_latency(module: nn.Module, example: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one ``module(example)`` call in eval mode under ``torch.inference_mode``."""
    was_training = module.training
    module.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            module(example)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    module.train(was_training)
    return statistics.median(times)
