"""Adversarial attacks and defences — lecture 10 / HW10: attacks in :mod:`.core`, defences in :mod:`.defences`."""
