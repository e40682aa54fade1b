"""The EQ domain: parameter layout, plug-in limits, SAFE-DB parsing and normalisers.

Nothing in this package knows about Kedro; it can be used on its own.
"""
