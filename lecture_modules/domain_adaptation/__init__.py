"""Domain adaptation — lecture 11 / HW11: train on a labelled source domain, test on an unlabelled target domain.

One entry point per method, each a module here with a config of the same name:

* ``source_only`` — no adaptation (the lower baseline);
* ``dann`` — domain-adversarial training with gradient reversal (Ganin & Lempitsky 2015, arXiv 1409.7495);
* ``mcd`` — maximum classifier discrepancy (Saito et al. 2018, arXiv 1712.02560);
* ``target_oracle`` — trained on labelled target data (the upper bound).

The pure pieces (gradient reversal, schedules, discrepancy, proxy A-distance) are in :mod:`.core`, the shared
network, evaluation and figures in :mod:`.common`. Nothing is imported here, so discovery stays cheap.
"""
