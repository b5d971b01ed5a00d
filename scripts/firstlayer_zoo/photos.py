"""The images inside scikit-image's wheel that the `skimage` dataset source reads, without a download.

Names and sizes only: start-up checks a config's image names, and stems' kernels against the images' sizes,
without importing skimage.data.
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
# The shorter side of each, in pixels, as scikit-image 0.26 ships them: planning checks a stem's kernel against it.
SHORTER_SIDES = {
    "astronaut": 512, "chelsea": 300, "coffee": 400, "rocket": 427, "motorcycle_left": 500, "motorcycle_right": 500,
    "hubble_deep_field": 872, "brick": 512, "camera": 512, "cat": 300, "cell": 550, "checkerboard": 200,
    "clock": 300, "coins": 303, "colorwheel": 370, "grass": 512, "gravel": 512, "immunohistochemistry": 512,
    "logo": 500, "microaneurysms": 102, "moon": 512, "page": 191, "retina": 1411, "text": 172,
}


def check_image_names(dataset: str, names: list[str]) -> None:
    """Refuse names scikit-image does not ship, listing the ones it does."""
    unknown = [name for name in names if name not in SKIMAGE_IMAGES]
    if unknown:
        raise ValueError(
            f"datasets.{dataset}.images: {', '.join(map(repr, unknown))} "
            f"{'is not an image' if len(unknown) == 1 else 'are not images'} shipped with scikit-image; "
            f"choose from the colour photos {', '.join(COLOUR_PHOTOS)} or the others {', '.join(OTHER_IMAGES)}")
