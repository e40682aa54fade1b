"""Neural EQ Morphing: neural semantic EQ on the SAFE-DB equaliser dataset."""

__version__ = "0.1.0"
