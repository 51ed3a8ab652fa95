"""Example projects built on this package (not a library: nothing of the project imports them)."""
