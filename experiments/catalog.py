"""Imports every paper module so that its experiments register themselves."""

from experiments import robbins_monro  # noqa: F401
