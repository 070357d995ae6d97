"""``ShapeSpec``: what a feature map looks like, passed between components at build time."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of a feature map (height/width when fixed, e.g. pooled RoIs)."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
