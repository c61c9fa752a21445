"""A real captioned-image dataset: emoji in three art styles with CLDR names (`clipscale data emoji`).

Modules: `packages` (the pinned npm packages: check or install), `concepts` (names, art, join,
split, captions), `render` (PNG/SVG -> resized RGB), `write` (shards, eval sets, suite, manifest),
`licenses` (LICENSES/), `build` (the command's library function).
"""

from clipscale.data.emoji.build import build_emoji_dataset
from clipscale.data.emoji.concepts import STYLES
from clipscale.data.emoji.packages import PINS

__all__ = ["PINS", "STYLES", "build_emoji_dataset"]
