"""The embedded benchmark's image-text corpus (docs/benchmark.md): still images of the benchmark's objects with captions
that name them, what an image-text corpus such as CLIP's teaches a backbone before it ever sees a video.

Each image shows one to `max_objects` distinct objects (colour x shape, the benchmark's own) at random places and
sizes on a random background; its caption names them in a random order, with the benchmark's shape synonyms ("a red
circle and a blue box"). Nothing in it shows or says an action or an order of events. No image is a frame of a benchmark
video: the corpus comes from its own random stream, several objects share most images (a video frame shows one), and
places and sizes are drawn from continuous ranges (tests compare the images with every frame of the videos).

Everything is a pure function of the parameters: the same params `pretrain` (PretrainParams) give the same images
and captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hcmi.data.frames import resize_and_crop
from hcmi.data.synthetic import COLOURS, SHAPE_WORDS, SHAPES, _background, _shape_mask
from hcmi.parameters import PretrainParams

STREAM = 7  # the corpus's own random stream beside the benchmark's splits (train 0, val 1, test 2)
PARTS = {"train": 0, "held_out": 1}
JOINERS = {2: ("{0} and {1}", "{0} with {1}", "{0} beside {1}"),
           3: ("{0}, {1} and {2}", "{0}, {1} and also {2}", "{0} with {1} and {2}")}


@dataclass(frozen=True)
class StillObject:
    colour: str
    shape: str
    x: float  # centre and radius as fractions of the image side
    y: float
    radius: float


@dataclass(frozen=True)
class Still:
    objects: tuple[StillObject, ...]
    background: tuple[int, int, int]
    caption: str

    @property
    def content(self) -> str:
        """Equal for images of the same set of objects (places aside): such images answer the same captions."""
        return "+".join(sorted(f"{o.colour}-{o.shape}" for o in self.objects))


def _place(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """Centres and radii of n objects that overlap little (a few tries each, then wherever the last try fell)."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        for _ in range(20):
            radius = float(rng.uniform(0.09, 0.2 if n > 1 else 0.3))
            x, y = (float(v) for v in rng.uniform(radius, 1 - radius, size=2))
            if all((x - a) ** 2 + (y - b) ** 2 >= (0.9 * (radius + r)) ** 2 for a, b, r in placed):
                break
        placed.append((x, y, radius))
    return placed


def _caption(objects: list[StillObject], rng: np.random.Generator) -> str:
    names = [" ".join((str(rng.choice(("a", "the"))), o.colour, str(rng.choice(SHAPE_WORDS[o.shape]))))
             for o in objects]
    names = [names[i] for i in rng.permutation(len(names))]
    if len(names) == 1:
        return names[0]
    return str(rng.choice(JOINERS[len(names)])).format(*names)


def still(source: PretrainParams, part: str, index: int) -> Still:
    rng = np.random.default_rng([source.seed, STREAM, PARTS[part], index])
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    n = int(rng.integers(1, source.max_objects + 1))
    picks = rng.choice(len(kinds), size=n, replace=False)
    objects = [StillObject(kinds[k][0], kinds[k][1], x, y, r) for k, (x, y, r) in zip(picks, _place(rng, n))]
    return Still(tuple(objects), _background(rng), _caption(objects, rng))


def stills(source: PretrainParams, part: str) -> list[Still]:
    """The training images ("train") or the held-out ones ("held_out")."""
    count = source.images if part == "train" else source.held_out
    return [still(source, part, i) for i in range(count)]


def render_still(item: Still, size: int) -> np.ndarray:
    """uint8 [size, size, 3]."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = np.asarray(item.background, dtype=np.uint8)
    for o in item.objects:
        mask = _shape_mask(o.shape, o.x * size, o.y * size, o.radius * size, (grid[0], grid[1]))
        image[mask] = np.asarray(COLOURS[o.colour], dtype=np.uint8)
    return image


def render_stills(items: list[Still], size: int, image_size: int) -> np.ndarray:
    """The images at the backbone's input size: uint8 [N, image_size, image_size, 3] (rendered at `size` and
    resized as the frame cache resizes video frames)."""
    if not items:
        return np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    return resize_and_crop(np.stack([render_still(item, size) for item in items]), image_size)
