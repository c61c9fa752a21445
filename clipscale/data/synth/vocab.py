"""The closed word vocabulary of the synthetic captions.

The built-in data uses a word-level tokenizer (one id per word) because a 49k-row BPE embedding
makes tiny models ~30 % slower for no accuracy gain (../shared/design/tiny-scale-findings.md).
Every caption the synthetic grammar produces must tokenize without `<unk>`; a test checks it.
Changing WORDS changes the ladder's vocab_size: append, never reorder. `<eot>` comes last because
open_clip's text tower pools the features at argmax(token id), i.e. at the highest id.
"""

PAD, SOT, UNK, EOT = "<pad>", "<sot>", "<unk>", "<eot>"

WORDS: tuple[str, ...] = (
    # shapes
    "circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart",
    "circles", "squares", "triangles", "stars", "crosses", "rings", "diamonds", "hearts",
    # colours
    "red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple", "white", "black",
    "pink", "brown", "gray",
    # sizes, textures
    "small", "large", "big", "tiny", "little", "huge", "striped", "dotted", "plain", "solid",
    "noisy", "dark", "bright", "textured",
    # positions and relations
    "left", "right", "top", "bottom", "center", "middle", "corner", "above", "below", "under",
    "over", "beside", "next", "near", "far", "side", "upper", "lower",
    # counts
    "no", "one", "two", "three", "four", "five", "single", "pair", "several", "many",
    # function words
    "a", "an", "the", "of", "and", "with", "is", "are", "there", "in", "on", "at", "to", "its",
    "it", "that", "this", "some", "object", "objects", "shape", "shapes", "thing", "things",
    "picture", "photo", "image", "scene", "drawing", "showing", "containing", "shows", "has",
    "background", "grey", "canvas", "together", "alone", "only", "exactly", "both", "each", "other",
    "than", "more", "bigger", "smaller", "colored", "coloured", "kind", "type", "label",
)

VOCABULARY: tuple[str, ...] = (PAD, SOT, UNK, *WORDS, EOT)
