"""Meta-learning — lecture 15 / HW15: learn an initialisation that adapts to a new N-way K-shot task in a few steps.

One entry point per method, each a module here with a config of the same name:

* ``maml`` — model-agnostic meta-learning with true second-order meta-gradients (Finn et al. 2017, arXiv 1703.03400);
* ``fomaml`` — first-order MAML: the inner-loop gradients are treated as constants (same paper, section 5.2);
* ``anil`` — almost no inner loop: only the classifier head adapts (Raghu et al. 2020, arXiv 1909.09157);
* ``reptile`` — moves the initialisation towards the adapted weights (Nichol et al. 2018, arXiv 1803.02999).

Each algorithm reads in the file named after it (``MAML.meta_loss`` in :mod:`.maml`, ``Reptile.meta_loss`` in
:mod:`.reptile`; FOMAML and ANIL change one default of MAML). The pure pieces (the ``ConvNetSpec`` network argument,
conv-4, the inner loop, meta-gradients task by task, confidence intervals) are in :mod:`.core`, the shared
Lightning shell (training step, evaluation, metrics, figures) in :mod:`.shell`; episodes come from
:mod:`datamodules.episodes`. Nothing is imported here, so discovery stays cheap.
"""
