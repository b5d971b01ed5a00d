"""The images inside scikit-image's wheel that the `skimage` dataset source reads, without a download.

Names only: start-up checks a config's image names against them without importing skimage.data.
"""

from __future__ import annotations

# The colour photographs: the default dataset.
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
)
# Everything else that ships as a 2-D uint8 image: grey photographs, textures, microscopy, synthetic.
OTHER_IMAGES = (
    "brick", "camera", "cat", "cell", "checkerboard", "clock", "coins", "colorwheel", "grass", "gravel",
    "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "text",
)
SKIMAGE_IMAGES = COLOUR_PHOTOS + OTHER_IMAGES


def check_image_names(dataset: str, names: list[str]) -> None:
    """Refuse names scikit-image does not ship, listing the ones it does."""
    unknown = [name for name in names if name not in SKIMAGE_IMAGES]
    if unknown:
        raise ValueError(
            f"datasets.{dataset}.images: {', '.join(map(repr, unknown))} "
            f"{'is not an image' if len(unknown) == 1 else 'are not images'} shipped with scikit-image; "
            f"choose from the colour photos {', '.join(COLOUR_PHOTOS)} or the others {', '.join(OTHER_IMAGES)}")
