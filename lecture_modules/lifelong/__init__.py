"""Life-long (continual) learning — lecture 14 / HW14: learning tasks one after another without forgetting.

A network trains on a stream of tasks (:class:`~datamodules.streams.TaskStreamDataModule`: permuted, rotated, split
task- or class-incremental); training on a new task destroys what was learned (catastrophic forgetting). The
regularisation methods add ``lambda * sum_i b_i (theta_i - theta*_i)^2`` and differ in the importance ``b``:

* ``ewc`` — EWC (arXiv 1612.00796), empirical or true Fisher, and online EWC (arXiv 1805.06370);
* ``si`` — synaptic intelligence (arXiv 1703.04200);
* ``mas`` — memory aware synapses (arXiv 1711.09601);
* ``rwalk`` — Riemannian walk (arXiv 1801.10112);
* ``scp`` — sliced Cramér preservation (openreview BJge3TNKwH);

against ``finetune`` (the forgetting baseline), ``replay`` (a small episodic memory) and ``joint`` (multi-task
training, the upper bound). Each method is the file named after it; they share

* :mod:`~lecture_modules.lifelong.continual` — the shell: task boundaries, the accuracy matrix, checkpoint state;
* :mod:`~lecture_modules.lifelong.penalty` — the quadratic penalty and how a task's importance is anchored;
* :mod:`~lecture_modules.lifelong.importance` — the pure core: the importance estimators as plain functions;
* :mod:`~lecture_modules.lifelong.metrics` — the accuracy matrix's average accuracy, BWT, forgetting, FWT.

Run: ``python cli.py fit --config configs/ewc.yaml`` (one config per method).
"""
