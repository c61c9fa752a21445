"""clipscale: reproducible scaling-law studies of contrastive language-image models.

The package imports nothing heavy: torch and open_clip are imported by the stages that need them,
so `import clipscale` and `clipscale --help` stay fast.
"""

__version__ = "0.1.0"
