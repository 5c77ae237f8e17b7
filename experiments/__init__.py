"""One module per paper: its ``Paper``, its ``Experiment``s with quick and full configurations, claims, controls
and panels. ``ratelab.catalog`` imports every module here, so a paper registers itself by existing."""
