"""The project's pipelines, discovered by ``find_pipelines``."""

#: Model variants; each is a namespace in data_processing, training and evaluation, with
#: its own blocks in the parameters (``normalisers.<v>``, ``<v>.training``, …).
VARIANTS = ("log1", "log2")
