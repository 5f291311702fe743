"""The embedded benchmark (docs/benchmark.md): real H.264 MP4s of shapes doing actions, captions from a phrase grammar.

Each video shows 2-4 consecutive events; in each event one object (colour x shape) performs one action (moves
left/right/up/down, grows, shrinks) while it is the only thing on screen. Captions describe the events in order with
paraphrased words and connectives ("a red circle moves left, then a blue box gets bigger").

Validation and test videos come in twin pairs, each twin the other's hard distractor:
  order   - the same events in reverse order (mean pooling sees the very same frames),
  binding - the same objects in the same order, their actions swapped.
Training videos come in families (docs/benchmark.md), so that every component of the method has something to fix:
  base            random events;
  false negative  (at `false_negative_rate`) a distinct video of the same events, captions drawn independently:
                  its captions and the base's are interchangeable, so treating it as a negative is wrong;
  hard negative   (at `hard_negative_rate`) an order or binding twin of the base: a true negative, hard to tell.
Every video carries `group_id` (its family; the twin pair in val/test) and `content_id` (equal for the same events).
Everything is a pure function of the generator parameters, so the data regenerate bit for bit from params.yaml, and
the MP4 bytes do too (frames carry explicit timestamps; one encoder thread).
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from hcmi.files import atomic_path, fingerprint, write_json
from hcmi.logs import progress

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: training families, group_id/content_id, byte-identical MP4s
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
QUERY_CAPTIONS_STREAM = 1  # the random stream of a twin pair's query captions after the first
TWIN_KINDS = ("order", "binding")

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
    group_id: str | None = None
    role: str = "base"  # base | false_negative | order | binding (training families); twin roles in val/test

    @property
    def content_id(self) -> str:
        return content_id(self.events)


def content_id(events) -> str:
    """Equal for videos showing the same events in the same order (placement and background aside): such videos
    answer the same captions."""
    return "/".join(f"{e.colour}-{e.shape}-{e.action}" for e in events)


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


def _captions(events, rng: np.random.Generator, n: int, found: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Up to n distinct captions of the events: `found` and new draws (20 tries per caption)."""
    found = list(found)
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


def _placed_anew(events: list[Event], rng: np.random.Generator) -> list[Event]:
    """The same objects doing the same actions, at new places (a false-negative copy is a distinct video)."""
    return [Event(e.colour, e.shape, e.action, anchor=float(rng.uniform(0.3, 0.7)),
                  offset=float(rng.uniform(-0.06, 0.06))) for e in events]


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(10, 60, size=3))


def _family(source, family: int) -> list[dict]:
    """One training family: the base video, then its false-negative copy and its hard negative where drawn."""
    rng = np.random.default_rng([source.seed, SPLIT_CODES["train"], family])
    with_copy = rng.random() < source.false_negative_rate
    hard_kind = TWIN_KINDS[int(rng.integers(len(TWIN_KINDS)))] if rng.random() < source.hard_negative_rate else None
    n = int(rng.integers(source.min_events, source.max_events + 1))
    # a binding twin swaps actions between objects: it differs from its base only when the actions are distinct
    base = _random_events(rng, n, distinct_actions=hard_kind == "binding")
    background = _background(rng)
    members = [dict(role="base", events=base, background=background,
                    captions=_captions(base, rng, source.captions_per_video))]
    if with_copy:
        copy = _placed_anew(base, rng)
        members.append(dict(role="false_negative", events=copy, background=_background(rng),
                            captions=_captions(copy, rng, source.captions_per_video)))
    if hard_kind:
        twin = _twin(base, hard_kind)
        members.append(dict(role=hard_kind, events=twin, background=background,
                            captions=_captions(twin, rng, source.captions_per_video)))
    return members


def _train_specs(source) -> list[VideoSpec]:
    """`n_train` videos in families, numbered in family order; the last family is cut where the count is reached
    (its base always stays: it comes first)."""
    families: list[list[dict]] = []
    count = 0
    while count < source.n_train:
        members = _family(source, len(families))[: source.n_train - count]
        families.append(members)
        count += len(members)
    specs: list[VideoSpec] = []
    for family, members in enumerate(families):
        ids = [f"train-{len(specs) + k:05d}" for k in range(len(members))]
        hard = next((k for k, m in enumerate(members) if m["role"] in TWIN_KINDS), None)
        for k, member in enumerate(members):
            twin = hard if k == 0 else (0 if k == hard else None)  # the base and its hard negative
            specs.append(VideoSpec(
                video_id=ids[k], split="train", events=tuple(member["events"]), background=member["background"],
                captions=member["captions"], twin_id=None if twin is None else ids[twin],
                twin_kind=None if twin is None else members[hard]["role"], group_id=f"train-family-{family:05d}",
                role=member["role"]))
    return specs


def _twin_pair_specs(source, split: str) -> list[VideoSpec]:
    specs = []
    for pair in range(getattr(source, f"n_{split}") // 2):
        rng = np.random.default_rng([source.seed, SPLIT_CODES[split], pair])
        n = int(rng.integers(source.min_events, source.max_events + 1))
        kind = TWIN_KINDS[pair % 2]
        base = _random_events(rng, n, distinct_actions=True)
        background = _background(rng)
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
                    group_id=f"{split}-pair-{pair:05d}",
                    role="base" if j == 0 else kind,
                )
            )
        if source.query_captions > 1:  # more queries per video, drawn after the first ones: those stay as they were
            more = np.random.default_rng([source.seed, SPLIT_CODES[split], pair, QUERY_CAPTIONS_STREAM])
            specs[-2:] = [replace(spec, captions=_captions(spec.events, more, source.query_captions, spec.captions))
                          for spec in specs[-2:]]
    return specs


def video_specs(source) -> list[VideoSpec]:
    """All videos of all splits, deterministically from the generator parameters (a SyntheticSource)."""
    return _train_specs(source) + _twin_pair_specs(source, "val") + _twin_pair_specs(source, "test")


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


def write_mp4(path: Path, frames: np.ndarray, fps: int, keyframe_interval: int | None = None,
              bit_exact: bool = True) -> None:
    """Encode frames as H.264 (yuv420p) MP4, atomically; keyframe_interval None keeps libx264's default (250).

    bit_exact: the same frames give the same bytes, in any process and on any CPU. Two things stand in the way:
    libx264 guesses timestamps it is not given, and its SIMD code reads uninitialised memory in the lookahead (the
    output then depends on what the process encoded before: measured, 1 to 5 of 28 small videos differed between
    runs; none with x264's plain C code, asm=0). asm=0 costs about 1.6x encoding time at 64 px and 3.5x at 320x240;
    bit_exact=False keeps the SIMD code, for inputs of speed benchmarks only."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "17", "preset": "veryfast", **({"x264-params": "asm=0"} if bit_exact else {})}
            stream.codec_context.thread_count = 1
            if keyframe_interval:
                stream.codec_context.gop_size = keyframe_interval
            time_base = Fraction(1, fps)
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = i, time_base
                for packet in stream.encode(frame):
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
    stamp = fingerprint(source.model_dump(), GENERATOR_VERSION)
    stamp_file = source_dir / "generator.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()).get("fingerprint") != stamp:
        log.info("generator parameters changed: regenerating %s", raw_dir)
        shutil.rmtree(videos_dir, ignore_errors=True)
        shutil.rmtree(source_dir, ignore_errors=True)
    write_json(stamp_file, {"fingerprint": stamp, "version": GENERATOR_VERSION, "parameters": source.model_dump()})

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
                    "group_id": s.group_id,
                    "content_id": s.content_id,
                    "role": s.role,
                }
                for s in specs
            ],
        },
    )
    return specs
