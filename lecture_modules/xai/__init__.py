"""Lecture 9 / HW9: explainable AI (attributions, feature visualisation, sanity checks)."""
