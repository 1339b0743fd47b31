"""albumentations pipelines from the recipe, always with ``strict=True`` (2.x silently ignores
unknown argument names otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from andon.errors import ConfigError

if TYPE_CHECKING:
    from andon.config import Augmentation


def build_augmentations(augmentations: tuple[Augmentation, ...], seed: int) -> Any:
    import albumentations as A

    transforms = []
    for aug in augmentations:
        cls = getattr(A, aug.name, None)
        if cls is None:
            raise ConfigError(f"recipe.augmentations: unknown albumentations transform {aug.name!r}")
        try:
            transforms.append(cls(p=aug.p, strict=True, **aug.params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"recipe.augmentations: {aug.name}: {exc}") from None
    return A.Compose(transforms, seed=seed, strict=True)
