"""The ``invconv-flow`` command line: train, evaluate, sample and time Inverse-Flow models (issue 12).

Needs the ``flows`` extra (normflows, scikit-learn) besides ``torch`` and ``cli``.
"""
