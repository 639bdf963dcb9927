"""Reinforcement learning — lecture 12 / HW12: returns and losses in :mod:`.core`, methods in their own files."""
