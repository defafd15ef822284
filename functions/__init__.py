"""One blueprint per trigger, each handler in the same shell (`functions.shell`).

A handler turns its binding into its use case's input; the shell runs the use case on the
worker's runtime inside the invocation's span, then records and logs its report.
"""
