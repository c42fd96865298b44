"""Sweeps (``kexp sweep``): Optuna searches a config's ``sweep:`` block; every trial is an
ordinary run trained by its own ``kexp train`` process.

``space`` (the parameters and their check), ``study`` (storage, sampler, pruner),
``trial`` (inside a trial's process), ``runner`` (the loop), ``results`` (what is shown
and written), ``directory`` (the sweep directory).
"""
