"""hcpsync's version, in a module of its own: the CLI reads it without the package's ``__init__``
(which a folder named ``hcpsync/`` in the working directory can shadow under ``python -m``)."""

__version__ = "0.1.0"
