"""As-ViT genotypes `K,S,E[,L]|K,S,E[,L]|K,S,E[,L]|K,S,E[,L]|h[,D]`: parsing, formatting, the search space.

Per stage: patch/merge kernel K, window splits S, MLP expansion E, layers L; h = heads of stage 4, D = width.
"""

from __future__ import annotations

import dataclasses
import math

from learngene_jax.errors import ConfigError, fail

NUM_STAGES = 4
DEFAULT_LAYERS = 1
DEFAULT_WIDTH = 32
# The official SEARCH_SPACE (lib/models/cell_operations.py) in genotype order; S4 is fixed to 1 there, kept
# here as a one-choice position so that the space is a product over the 13 genotype positions.
SEARCH_SPACE: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("K1", (4, 5, 6, 7, 8)), ("S1", (2, 4, 8)), ("E1", (2, 3, 4, 5, 6)),
    ("K2", (2, 3, 4)), ("S2", (1, 2, 4)), ("E2", (2, 3, 4, 5, 6)),
    ("K3", (2, 3, 4)), ("S3", (1, 2)), ("E3", (2, 3, 4, 5, 6)),
    ("K4", (2, 3, 4)), ("S4", (1,)), ("E4", (2, 3, 4, 5, 6)),
    ("h", (16, 32, 64)),
)
CHOICES = dict(SEARCH_SPACE)
SEED = "8,2,3|4,1,2|4,1,4|4,1,6|32"
LARGE = "8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180"
# Patch embedding stride and the largest stage width (official `min(1024, D * 2**i)`).
EMBED_STRIDE = 4
MAX_WIDTH = 1024


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A parsed As-ViT genotype; tuples hold one entry per stage."""

    kernels: tuple[int, ...]
    splits: tuple[int, ...]
    expansions: tuple[int, ...]
    heads: int
    depths: tuple[int, ...] = (DEFAULT_LAYERS,) * NUM_STAGES
    width: int = DEFAULT_WIDTH

    @property
    def stage_heads(self) -> tuple[int, ...]:
        """Heads per stage: h/8, h/4, h/2, h (official `Structure.heads`)."""
        return tuple(self.heads // 2 ** (NUM_STAGES - 1 - i) for i in range(NUM_STAGES))

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Channels per stage: min(1024, D·2^i)."""
        return tuple(stage_width(self.width, i) for i in range(NUM_STAGES))

    def replace(self, **changes) -> Genotype:
        """A copy with some fields changed (validated again)."""
        return validate(dataclasses.replace(self, **changes))

    def __str__(self) -> str:
        return format_genotype(self)


def stage_width(width: int, stage: int) -> int:
    """Channels of stage `stage` (0-based) for initial width D."""
    return min(MAX_WIDTH, int(width * 2**stage))


def space_size() -> int:
    """Number of architectures in the search space (4,556,250)."""
    return math.prod(len(choices) for _, choices in SEARCH_SPACE)


def _int(text: str, what: str, genotype: str) -> int:
    try:
        return int(text)
    except ValueError:
        fail(ConfigError, f"genotype {genotype!r}: {what} must be an integer, got {text!r}")


def parse_genotype(text: str) -> Genotype:
    """Parse `K,S,E[,L]|...|h[,D]` into a validated `Genotype` (one-line ConfigError when malformed)."""
    if not isinstance(text, str):
        fail(ConfigError, f"a genotype is a string like {SEED!r}, got {type(text).__name__}")
    parts = text.strip().split("|")
    if len(parts) != NUM_STAGES + 1:
        fail(ConfigError, f"genotype {text!r} has {len(parts) - 1} stages; As-ViT needs {NUM_STAGES} stages "
                          f"'K,S,E[,L]' and a head part 'h[,D]' separated by '|', e.g. {SEED!r}")
    stages = []
    for i, part in enumerate(parts[:-1], 1):
        fields = part.split(",")
        if len(fields) not in (3, 4):
            fail(ConfigError, f"genotype {text!r}: stage {i} {part!r} must be 'K,S,E' or 'K,S,E,L'")
        names = ("K", "S", "E", "L")
        stages.append([_int(f, f"{names[j]}{i}", text) for j, f in enumerate(fields)])
    if len({len(s) for s in stages}) != 1:
        fail(ConfigError, f"genotype {text!r}: give the layer count L in every stage or in none")
    head = parts[-1].split(",")
    if len(head) not in (1, 2):
        fail(ConfigError, f"genotype {text!r}: the head part {parts[-1]!r} must be 'h' or 'h,D'")
    heads = _int(head[0], "h", text)
    width = _int(head[1], "D", text) if len(head) == 2 else DEFAULT_WIDTH
    depths = tuple(s[3] for s in stages) if len(stages[0]) == 4 else (DEFAULT_LAYERS,) * NUM_STAGES
    return validate(Genotype(kernels=tuple(s[0] for s in stages), splits=tuple(s[1] for s in stages),
                             expansions=tuple(s[2] for s in stages), heads=heads, depths=depths, width=width),
                    text)


def validate(g: Genotype, text: str | None = None) -> Genotype:
    """Check that `g` lies in the search space (any L ≥ 1, D wide enough for its heads); return it."""
    for field in ("kernels", "splits", "expansions", "depths"):
        if len(getattr(g, field)) != NUM_STAGES:
            fail(ConfigError, f"As-ViT {field} needs {NUM_STAGES} entries (one per stage), got {getattr(g, field)}")
    where = f"genotype {text or format_genotype(g, full=True)!r}"
    values = dict(zip(("K", "S", "E"), (g.kernels, g.splits, g.expansions), strict=True))
    for name, choices in SEARCH_SPACE:
        value = g.heads if name == "h" else values[name[0]][int(name[1]) - 1]
        if value not in choices:
            fail(ConfigError, f"{where}: {name}={value} is outside the As-ViT search space {list(choices)}")
    if min(g.depths) < 1:
        fail(ConfigError, f"{where}: every stage needs at least 1 layer, got L={list(g.depths)}")
    narrow = [i + 1 for i, (c, h) in enumerate(zip(g.stage_widths, g.stage_heads, strict=True)) if c < h]
    if narrow:
        fail(ConfigError, f"{where}: width D={g.width} gives stage {narrow[0]} fewer channels than its "
                          f"{g.stage_heads[narrow[0] - 1]} heads; use D >= {g.heads // 8}")
    return g


def check_resolution(g: Genotype, image_size: int) -> tuple[int, ...]:
    """Token grid side of each stage at `image_size`; ConfigError when a stage cannot be split or merged."""
    if image_size < EMBED_STRIDE or image_size % EMBED_STRIDE:
        fail(ConfigError, f"As-ViT needs an image size that is a multiple of {EMBED_STRIDE}, got {image_size}")
    sides = [image_size // EMBED_STRIDE]
    for i, split in enumerate(g.splits):
        side = sides[-1]
        if side % split:
            fail(ConfigError, f"genotype {format_genotype(g)!r}: window splits S{i + 1}={split} do not divide the "
                              f"{side}x{side} token grid of stage {i + 1} at image size {image_size}")
        if i < NUM_STAGES - 1:
            # Stride-2 merging of an even grid (the official PatchMerging asserts it).
            if side % 2:
                fail(ConfigError, f"image size {image_size} gives stage {i + 1} an odd {side}x{side} token grid; "
                                  f"patch merging needs even grids: use a multiple of "
                                  f"{EMBED_STRIDE * 2 ** (NUM_STAGES - 1)}")
            sides.append(side // 2)
    return tuple(sides)


def format_genotype(g: Genotype, full: bool = False) -> str:
    """The genotype string; L and D appear only when not the defaults (always when `full`)."""
    with_layers = full or any(d != DEFAULT_LAYERS for d in g.depths)
    stages = []
    for k, s, e, d in zip(g.kernels, g.splits, g.expansions, g.depths, strict=True):
        stages.append(f"{k},{s},{e},{d}" if with_layers else f"{k},{s},{e}")
    head = f"{g.heads},{g.width}" if full or g.width != DEFAULT_WIDTH else f"{g.heads}"
    return "|".join([*stages, head])


def from_choices(indices: tuple[int, ...] | list[int]) -> Genotype:
    """The genotype of one index per `SEARCH_SPACE` position (layers 1, width 32: the search setting)."""
    if len(indices) != len(SEARCH_SPACE):
        fail(ConfigError, f"need {len(SEARCH_SPACE)} choice indices, got {len(indices)}")
    v = [choices[int(i)] for (_, choices), i in zip(SEARCH_SPACE, indices, strict=True)]
    return validate(Genotype(kernels=tuple(v[0:12:3]), splits=tuple(v[1:12:3]), expansions=tuple(v[2:12:3]),
                             heads=v[12]))
