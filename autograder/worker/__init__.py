"""The untrusted side: copied into each run's sandbox and run as its own process.

Nothing here may import from the trusted grader (autograder/*): the sandbox holds only this
package, the submission and generate_data.py.
"""
