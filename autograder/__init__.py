"""Scratch-1 autograder: the trusted grader (this package) and the untrusted worker (worker/)."""
