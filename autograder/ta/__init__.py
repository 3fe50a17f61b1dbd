"""The TA's tools, outside grading: batch runs over a class (batch.py, batch_ray.py) and their
HTML report (html_report.py). Nothing here decides a grade, so kit_version leaves this folder
out of the grading fingerprint; a student's submission is graded by the modules one level up."""
