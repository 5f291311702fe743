"""The embedded benchmark (DESIGN §5): real H.264 MP4s of shapes doing actions, with captions from a phrase grammar.

Each video shows 2-4 consecutive events; in each event one object (colour x shape) performs one action (moves
left/right/up/down, grows, shrinks) while it is the only thing on screen. Captions describe the events in order with
paraphrased words and connectives ("a red circle moves left, then a blue box gets bigger").

Validation and test videos come in twin pairs, each twin the other's hard distractor:
  order   - the same events in reverse order (mean pooling sees the very same frames),
  binding - the same objects in the same order, their actions swapped.
Everything is a pure function of the generator parameters, so the data regenerate bit for bit from params.yaml.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hcmi.files import atomic_path, fingerprint, write_json
from hcmi.logs import progress

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 245),
    "yellow": (240, 220, 40),
    "white": (240, 240, 240),
    "purple": (175, 70, 225),
}
SHAPES = ("circle", "square", "triangle", "diamond")
ACTIONS = ("left", "right", "up", "down", "grow", "shrink")

SHAPE_WORDS = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
ACTION_PHRASES = {
    "left": ("moves left", "slides to the left", "goes left"),
    "right": ("moves right", "slides to the right", "goes right"),
    "up": ("moves up", "rises", "goes up"),
    "down": ("moves down", "sinks", "goes down"),
    "grow": ("grows", "gets bigger", "expands"),
    "shrink": ("shrinks", "gets smaller", "contracts"),
}
# connectives keep the true event order; some mention the later event first ("B after A")
CONNECTIVES = {
    2: ("{0}, then {1}", "first {0}, and then {1}", "{0} before {1}", "after {0}, {1}", "{1} after {0}"),
    3: ("{0}, then {1}, then {2}", "first {0}, then {1}, and finally {2}", "{0}; next {1}; last {2}"),
    4: ("{0}, then {1}, then {2}, then {3}", "first {0}, then {1}, then {2}, and finally {3}"),
}


@dataclass(frozen=True)
class Event:
    colour: str
    shape: str
    action: str
    anchor: float  # where the event happens across its motion axis (or its centre), as a fraction of the frame
    offset: float  # small shift of the start/end of the motion, so no two events are pixel-identical


@dataclass(frozen=True)
class VideoSpec:
    video_id: str
    split: str
    events: tuple[Event, ...]
    background: tuple[int, int, int]
    captions: tuple[str, ...]
    twin_id: str | None = None
    twin_kind: str | None = None


# ----------------------------------------------------------------------------------------------------------------
# specs: events and captions


def _random_events(rng: np.random.Generator, n: int, distinct_actions: bool) -> list[Event]:
    objects = [(c, s) for c in COLOURS for s in SHAPES]
    picks = rng.choice(len(objects), size=n, replace=False)
    actions = rng.choice(len(ACTIONS), size=n, replace=not distinct_actions)
    return [
        Event(
            colour=objects[o][0],
            shape=objects[o][1],
            action=ACTIONS[a],
            anchor=float(rng.uniform(0.3, 0.7)),
            offset=float(rng.uniform(-0.06, 0.06)),
        )
        for o, a in zip(picks, actions)
    ]


def caption(events: tuple[Event, ...] | list[Event], rng: np.random.Generator) -> str:
    clauses = [" ".join((str(rng.choice(("a", "the"))), e.colour, str(rng.choice(SHAPE_WORDS[e.shape])),
                         str(rng.choice(ACTION_PHRASES[e.action])))) for e in events]
    template = str(rng.choice(CONNECTIVES[len(events)]))
    return template.format(*clauses)


def _captions(events, rng: np.random.Generator, n: int) -> tuple[str, ...]:
    found: list[str] = []
    for _ in range(20 * n):
        text = caption(events, rng)
        if text not in found:
            found.append(text)
        if len(found) == n:
            break
    return tuple(found)


def _twin(events: list[Event], kind: str) -> list[Event]:
    if kind == "order":
        return list(reversed(events))
    # binding: every object takes the next object's action (a derangement, since actions are distinct)
    actions = [e.action for e in events]
    shifted = actions[1:] + actions[:1]
    return [Event(e.colour, e.shape, a, e.anchor, e.offset) for e, a in zip(events, shifted)]


def video_specs(source) -> list[VideoSpec]:
    """All videos of all splits, deterministically from the generator parameters (a SyntheticSource)."""
    specs: list[VideoSpec] = []
    for split, count in (("train", source.n_train), ("val", source.n_val), ("test", source.n_test)):
        code = SPLIT_CODES[split]
        if split == "train":
            for i in range(count):
                rng = np.random.default_rng([source.seed, code, i])
                n = int(rng.integers(source.min_events, source.max_events + 1))
                events = _random_events(rng, n, distinct_actions=False)
                specs.append(
                    VideoSpec(
                        video_id=f"{split}-{i:05d}",
                        split=split,
                        events=tuple(events),
                        background=tuple(int(v) for v in rng.integers(10, 60, size=3)),
                        captions=_captions(events, rng, source.captions_per_video),
                    )
                )
            continue
        for pair in range(count // 2):
            rng = np.random.default_rng([source.seed, code, pair])
            n = int(rng.integers(source.min_events, source.max_events + 1))
            kind = ("order", "binding")[pair % 2]
            base = _random_events(rng, n, distinct_actions=True)
            background = tuple(int(v) for v in rng.integers(10, 60, size=3))
            ids = (f"{split}-{2 * pair:05d}", f"{split}-{2 * pair + 1:05d}")
            for j, events in enumerate((base, _twin(base, kind))):
                specs.append(
                    VideoSpec(
                        video_id=ids[j],
                        split=split,
                        events=tuple(events),
                        background=background,
                        captions=_captions(events, rng, 1),
                        twin_id=ids[1 - j],
                        twin_kind=kind,
                    )
                )
    return specs


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _shape_mask(shape: str, cx: float, cy: float, r: float, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    yy, xx = grid
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up
        top, bottom = cy - r, cy + 0.8 * r
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= (yy - top) / (bottom - top) * r)
    raise ValueError(f"unknown shape {shape}")


def _event_geometry(event: Event, t: float) -> tuple[float, float, float]:
    """Centre x, centre y and radius (fractions of the frame side) at progress t in [0, 1]."""
    start, end = 0.22 + event.offset, 0.78 + event.offset
    radius = 0.16
    cx = cy = event.anchor
    if event.action == "left":
        cx = end + (start - end) * t
    elif event.action == "right":
        cx = start + (end - start) * t
    elif event.action == "up":
        cy = end + (start - end) * t
    elif event.action == "down":
        cy = start + (end - start) * t
    elif event.action == "grow":
        radius = 0.07 + 0.21 * t
    elif event.action == "shrink":
        radius = 0.28 - 0.21 * t
    return cx, cy, radius


def render(spec: VideoSpec, fps: int, event_seconds: float, size: int) -> np.ndarray:
    """The frames of a video: uint8 [n_frames, size, size, 3]."""
    per_event = max(2, int(round(fps * event_seconds)))
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    frames = np.empty((per_event * len(spec.events), size, size, 3), dtype=np.uint8)
    frames[:] = np.asarray(spec.background, dtype=np.uint8)
    for k, event in enumerate(spec.events):
        colour = np.asarray(COLOURS[event.colour], dtype=np.uint8)
        for i in range(per_event):
            cx, cy, r = _event_geometry(event, i / (per_event - 1))
            mask = _shape_mask(event.shape, cx * size, cy * size, r * size, (grid[0], grid[1]))
            frames[k * per_event + i][mask] = colour
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: int, keyframe_interval: int | None = None) -> None:
    """Encode frames as H.264 (yuv420p) MP4, atomically; keyframe_interval None keeps libx264's default (250)."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "17", "preset": "veryfast"}
            stream.codec_context.thread_count = 1
            if keyframe_interval:
                stream.codec_context.gop_size = keyframe_interval
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# ----------------------------------------------------------------------------------------------------------------
# the generation step


def generate(source, raw_dir: Path, workers: int = 1) -> list[VideoSpec]:
    """Write videos/<id>.mp4 and source/captions.json under raw_dir; resumes (keeps finished videos) when the
    generator parameters are unchanged, starts over when they changed."""
    raw_dir = Path(raw_dir)
    videos_dir, source_dir = raw_dir / "videos", raw_dir / "source"
    stamp = fingerprint(asdict(source), GENERATOR_VERSION)
    stamp_file = source_dir / "generator.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()).get("fingerprint") != stamp:
        log.info("generator parameters changed: regenerating %s", raw_dir)
        shutil.rmtree(videos_dir, ignore_errors=True)
        shutil.rmtree(source_dir, ignore_errors=True)
    write_json(stamp_file, {"fingerprint": stamp, "version": GENERATOR_VERSION, "parameters": asdict(source)})

    specs = video_specs(source)
    todo = [s for s in specs if not (videos_dir / f"{s.video_id}.mp4").exists()]
    log.info("synthetic benchmark: %d videos (%d to write) in %s", len(specs), len(todo), videos_dir)

    def make(spec: VideoSpec) -> None:
        frames = render(spec, source.fps, source.event_seconds, source.size)
        write_mp4(videos_dir / f"{spec.video_id}.mp4", frames, source.fps)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in progress(pool.map(make, todo), total=len(todo), desc="render+encode", unit="video"):
            pass

    write_json(
        source_dir / "captions.json",
        {
            "generator": {"version": GENERATOR_VERSION, "fingerprint": stamp},
            "videos": [
                {
                    "video_id": s.video_id,
                    "split": s.split,
                    "captions": list(s.captions),
                    "events": [asdict(e) for e in s.events],
                    "twin_id": s.twin_id,
                    "twin_kind": s.twin_kind,
                }
                for s in specs
            ],
        },
    )
    return specs
