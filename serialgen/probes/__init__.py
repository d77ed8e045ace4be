"""Evaluation probes for the offline profiles: rulers trained on synthetic labels, not models.

* :mod:`~serialgen.probes.nets` the identity embedder and the attribute classifier;
* :mod:`~serialgen.probes.inputs` what each sees (figure on white and framed; whole image);
* :mod:`~serialgen.probes.data` labelled renders, pairs and standards read from the lake;
* :mod:`~serialgen.probes.training` metric learning on character id, cross-entropy per attribute;
* :mod:`~serialgen.probes.validation` held-out retrieval vs pixels, accuracy vs majority class;
* :mod:`~serialgen.probes.model` the :class:`Probes` object and its folder (one loader).

A probe is never a conditioning encoder of a model we train (tests/test_layout.py keeps the model code
from importing this package): a model trained through its ruler could fit the ruler instead of the task.
"""

from serialgen.probes.model import Probes, load_probes

__all__ = ["Probes", "load_probes"]
