"""Data stage: the built-in synthetic captioned scenes (`clipscale.data.synth`) and their CLI verbs."""
