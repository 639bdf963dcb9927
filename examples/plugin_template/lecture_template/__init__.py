"""A template lecture package for ml-lectures."""
