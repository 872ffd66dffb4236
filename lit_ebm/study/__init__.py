"""Comparison studies held to a reviewer's standard (docs/studies.md): a study file names the
data, the generators, the ML start, the arms continued from it, their compute budget, the
training seeds and the measurements; ``python -m lit_ebm.study`` runs it, resumably, and
renders its results."""
