"""Load and speed measurements (not tests): each script prints its figures."""
