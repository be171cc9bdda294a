"""Helpers shared by the test suite: real processes, real servers, conditions with timeouts."""
