"""lgmrec-repro: a reproducibility suite for LGMRec (Guo et al., AAAI 2024).

Modules: ``data`` (load/validate datasets), ``synthetic`` (the embedded default data), ``graph``
(sparse graph matrices), ``models`` (LGMRec and baselines), ``training`` and ``evaluation`` (the
protocol), ``cli`` (``python -m lgmrec``).
"""

__version__ = "0.1.0"
